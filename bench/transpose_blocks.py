"""Why the FFT long convolution copies its transposes in blocks: one (L, H) transpose copied whole vs in blocks of
``TRANSPOSE_BLOCK`` along the destination's contiguous axis, into the FFT's (B, H, n) layout and back out, at the
shapes M2-BERT-base's sequence mixer meets (H = 768; 2,048 tokens per batch, one sequence at 8192).

Each copy is timed alone (best of ``--repeats``, the two ways alternating) into a preallocated destination, so
allocation is not counted; the JSON and Markdown land in ``--out``.

    OMP_NUM_THREADS=2 python bench/transpose_blocks.py --out bench/results
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch

from m2bert import cli_help
from m2bert.atomic import atomic_write_json, atomic_write_text
from m2bert.machine import describe
from m2bert.model import long_conv

log = logging.getLogger("bench.transpose_blocks")
SHAPES = ((16, 128), (4, 512), (1, 2048), (1, 8192))  # (batch, tokens)


def best_ms(fns: dict[str, object], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: round(min(t[1:]) * 1e3, 3) for name, t in times.items()}


def measure(batch: int, seqlen: int, channels: int, repeats: int) -> dict[str, object]:
    x = torch.randn(batch, seqlen, channels)
    padded = torch.empty(batch, channels, 2 * seqlen)
    y = torch.randn(batch, channels, 2 * seqlen)
    back = torch.empty(batch, seqlen, channels)
    into = best_ms({"whole": lambda: padded[..., :seqlen].copy_(x.transpose(1, 2)),
                    "blocks": lambda: long_conv._copy_transposed(padded[..., :seqlen], x)}, repeats)
    out = best_ms({"whole": lambda: back.copy_(y[..., :seqlen].transpose(1, 2)),
                   "blocks": lambda: long_conv._copy_transposed(back, y[..., :seqlen])}, repeats)
    return {"batch": batch, "tokens": seqlen, "channels": channels, "into_fft_layout_ms": into,
            "back_out_ms": out, "speedup_into": round(into["whole"] / into["blocks"], 2),
            "speedup_out": round(out["whole"] / out["blocks"], 2)}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--channels", type=int, default=768, help="H, the sequence mixer's width")
    p.add_argument("--repeats", type=int, default=15, help="timed copies of each way per shape")
    p.add_argument("--out", default=None, help="folder for transpose_blocks_cpu.json/.md (default: log only)")
    args = p.parse_args(argv)
    rows = [measure(b, n, args.channels, args.repeats) for b, n in SHAPES]
    for r in rows:
        log.info("%s", r)
    if args.out:
        result = {"benchmark": "transpose_blocks", "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                  "command": "python bench/transpose_blocks.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "machine": describe(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "block": long_conv.TRANSPOSE_BLOCK, "rows": rows}
        atomic_write_json(Path(args.out) / "transpose_blocks_cpu.json", result)
        lines = [f"# Long conv transposes: whole vs blocks of {long_conv.TRANSPOSE_BLOCK}", "",
                 f"{result['machine']['cpu']}, {result['threads']} threads, fp32, {result['date']}; "
                 f"`{result['command']}`. Best of {args.repeats} copies, ms.", "",
                 "| batch × tokens | into FFT layout: whole | blocks | speed-up | back out: whole | blocks | speed-up |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['batch']} × {r['tokens']} | {r['into_fft_layout_ms']['whole']} | "
                  f"{r['into_fft_layout_ms']['blocks']} | {r['speedup_into']}× | {r['back_out_ms']['whole']} | "
                  f"{r['back_out_ms']['blocks']} | {r['speedup_out']}× |" for r in rows]
        atomic_write_text(Path(args.out) / "transpose_blocks_cpu.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
