"""Forward throughput (tokens/ms) of M2-BERT vs transformers' BERT, side by side in one process.

Both models get the same batch per length, the MLM head included (as in the paper's
benchmark), after warm-up; the ratio m2/bert is what to read. ``--compile best`` times each
model eager and torch.compile'd (inductor; the first, compiling call is part of the warm-up) and
compares the best of each, reporting both settings. Example:

    python bench/throughput.py --device cpu --lengths 128 512 2048 8192 --json out.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from typing import Any, Callable

import torch

from m2bert import cli_help

log = logging.getLogger("bench.throughput")

# The paper's GPU batch sizes (M2: 32/32/16/8/4 at 512..8192; BERT: 32/32/8/4/2). On the CPU,
# both models get the same batch at each length, sized to keep a run within minutes.
PAPER_GPU_BATCH = {
    "m2": {512: 32, 1024: 32, 2048: 16, 4096: 8, 8192: 4},
    "bert": {512: 32, 1024: 32, 2048: 8, 4096: 4, 8192: 2},
}


def cpu_batch(length: int, tokens: int) -> int:
    return max(1, tokens // length)


def build_m2(
    preset: str, length: int, device: str, dtype: torch.dtype, impl: str, kernels: str = "auto"
) -> torch.nn.Module:
    from m2bert import M2BertConfig, M2BertForMaskedLM

    cfg = M2BertConfig.from_preset(preset, max_length=max(length, 128), long_conv_impl=impl, kernels=kernels)
    return M2BertForMaskedLM(cfg).to(device=device, dtype=dtype).eval()


def bert_preset_for(m2_preset: str) -> str:
    """The BERT baseline of the same width and depth where one exists (tiny, small); bert-base otherwise."""
    return {"m2-bert-tiny": "bert-tiny", "m2-bert-small": "bert-small"}.get(m2_preset, "bert-base")


def build_bert(preset: str, length: int, vocab: int, device: str, dtype: torch.dtype, attn: str) -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    from m2bert.train.builders import BERT_PRESETS

    cfg = BertConfig(max_position_embeddings=max(length, 512), attn_implementation=attn, vocab_size=vocab,
                     **BERT_PRESETS[preset])
    return BertForMaskedLM(cfg).to(device=device, dtype=dtype).eval()


def time_side_by_side(fns: dict[str, Callable[[], Any]], device: str, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each timed call of each function, by round; calls alternate (order reversed every round) so that every
    function sees the same machine: on a shared CPU, back-to-back runs differ by ±10%."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(warmup):
                fn()
            sync()
            if name.endswith("compiled"):
                log.info("warm-up of %s (compiling included): %.1f s", name, time.perf_counter() - t0)
        for r in range(repeats):
            for name in list(fns)[:: 1 if r % 2 == 0 else -1]:
                t0 = time.perf_counter()
                fns[name]()
                sync()
                times[name].append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def forward_call(model: torch.nn.Module, batch: int, length: int, vocab: int, device: str) -> Callable[[], Any]:
    ids = torch.randint(1000 if vocab > 2000 else 5, vocab, (batch, length), device=device)
    mask = torch.ones_like(ids)
    return lambda: model(input_ids=ids, attention_mask=mask)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no CUDA GPU is visible; run with --device cpu or on a GPU machine")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bert_preset = args.bert_preset or bert_preset_for(args.preset)
    results: dict[str, Any] = {
        "benchmark": "forward throughput, MLM head included; calls alternate between the models",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python bench/throughput.py " + " ".join(args.argv),
        "device": device,
        "dtype": args.dtype,
        "m2_preset": args.preset,
        "m2_kernels": args.kernels,
        "compile": args.compile,
        "bert": f"transformers BertForMaskedLM ({bert_preset}), attn_implementation={args.attn}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "lengths": {},
    }
    settings = {"false": ("eager",), "true": ("compiled",), "best": ("eager", "compiled")}[args.compile]
    for length in args.lengths:
        if device.startswith("cuda"):
            batches = {"m2": PAPER_GPU_BATCH["m2"].get(length, 32), "bert": PAPER_GPU_BATCH["bert"].get(length, 32)}
        else:
            batches = dict.fromkeys(("m2", "bert"), cpu_batch(length, args.tokens))
        m2 = build_m2(args.preset, length, device, dtype, args.long_conv_impl, args.kernels)
        vocab = m2.config.vocab_size  # the same MLM head size for both
        models = {"m2": m2, "bert": build_bert(bert_preset, length, vocab, device, dtype, args.attn)}
        fns: dict[str, Callable[[], Any]] = {}
        for name, model in models.items():
            for setting in settings:
                fn = model
                if setting == "compiled":
                    from m2bert.train.torch_compile import compile_module

                    fn = compile_module(model, dynamic=False)
                fns[f"{name}_{setting}"] = forward_call(fn, batches[name], length, vocab, device)
        rounds = time_side_by_side(fns, device, args.warmup, args.repeats)
        secs = {name: median(ts) for name, ts in rounds.items()}
        row: dict[str, Any] = {"m2_batch": batches["m2"], "bert_batch": batches["bert"]}
        for name in models:
            per_setting = {setting: secs[f"{name}_{setting}"] for setting in settings}
            if len(settings) > 1:
                for setting, sec in per_setting.items():
                    row[f"{name}_{setting}_tok_per_ms"] = round(batches[name] * length / (sec * 1e3), 3)
            best = min(per_setting, key=per_setting.__getitem__)
            row[f"{name}_best"] = best
            row[f"{name}_tok_per_ms"] = round(batches[name] * length / (per_setting[best] * 1e3), 3)
            row[f"{name}_ms_per_batch"] = round(per_setting[best] * 1e3, 2)
        row["ratio"] = round(row["m2_tok_per_ms"] / row["bert_tok_per_ms"], 3)
        # The spread: the ratio within each round of the alternation (best settings, per token).
        per_round = [(batches["m2"] / m) / (batches["bert"] / b)
                     for m, b in zip(rounds[f"m2_{row['m2_best']}"], rounds[f"bert_{row['bert_best']}"])]
        row["ratio_per_round"] = {"min": round(min(per_round), 3), "median": round(median(per_round), 3),
                                  "max": round(max(per_round), 3)}
        results["lengths"][str(length)] = row
        log.info("L=%d %s", length, row)
        del models, fns
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048, 8192], help="sequence lengths in tokens")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--preset", default="m2-bert-base-80m", help="M2BertConfig preset")
    p.add_argument("--long-conv-impl", default="fft", choices=["fft", "monarch", "direct"], help="long convolution path")
    p.add_argument("--kernels", default="auto", choices=["auto", "triton", "torch"],
                   help="M2 config `kernels`: auto = fused Triton kernels on CUDA, PyTorch elsewhere")
    p.add_argument("--compile", choices=["false", "true", "best"], default="false",
                   help="torch.compile the models: false (eager), true, or best (both, each model's best compared)")
    p.add_argument("--bert-preset", default=None, help="BERT baseline (bert-base, bert-small, bert-tiny); default: "
                   "the one of the M2 preset's width and depth where it exists, else bert-base")
    p.add_argument("--attn", default="sdpa", help="BERT attention implementation (sdpa, eager)")
    p.add_argument("--tokens", type=int, default=2048, help="CPU: tokens per batch (batch = tokens // length, at least 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed forward passes per length")
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes per length (the median is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.dtype is None:
        args.dtype = "bf16" if args.device.startswith("cuda") else "fp32"
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    results = run(args)
    text = json.dumps(results, indent=2)
    if args.json:
        from m2bert.atomic import atomic_write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_json(args.json, results)
    print(text)  # the JSON on stdout is this tool's output


if __name__ == "__main__":
    main()
