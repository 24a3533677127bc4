"""Where a training step's (or a long forward's) CPU time goes: torch.profiler's top operators for M2-BERT
and its reference.

One MLM training step (fwd + bwd + optimizer) per model after a warm-up step, the same batch for both, as
bench/train_throughput.py builds them; prints each model's table of operators by self CPU time. ``--forward``
profiles instead one inference forward per model as bench/throughput.py times it (``--bf16``: under bf16
autocast), against ModernBERT-base by default: what limits the long-document ratio.

    python bench/profile_train.py --rows 12                 # m2-bert-base-80m vs bert-base, L=128, batch 16
    python bench/profile_train.py --m2 m2-bert-tiny --bert bert-tiny --rows 5
    python bench/profile_train.py --out bench/results/profile_train_cpu.txt   # also kept as a file
    python bench/profile_train.py --forward --length 8192 --batch 1 --bf16 --out bench/results/profile_forward_cpu_8192_bf16.txt
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from m2bert import cli_help

log = logging.getLogger("bench.profile_train")


def _bench_module(name: str):
    """A script of bench/ loaded by path (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _forward_calls(args):
    """(preset, timed forward) for M2 and the reference, built as bench/throughput.py builds them."""
    tp = _bench_module("throughput")
    m2 = tp.build_m2(args.m2, args.length, "cpu", torch.float32, "auto")
    vocab = m2.config.vocab_size
    if args.reference.startswith("modernbert"):
        ref = tp.build_modernbert(args.reference, vocab, "cpu", torch.float32, "sdpa")
    else:
        ref = tp.build_bert(args.reference, args.length, vocab, "cpu", torch.float32, "sdpa")
    return [(preset, tp.forward_call(model, args.batch, args.length, vocab, "cpu", bf16=args.bf16))
            for preset, model in ((args.m2, m2), (args.reference, ref))]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--m2", default="m2-bert-base-80m", help="M2BertConfig preset")
    p.add_argument("--bert", default="bert-base", help="BERT baseline preset")
    p.add_argument("--rows", type=int, default=12, help="operators listed per model")
    p.add_argument("--forward", action="store_true", help="profile one inference forward instead of a training step")
    p.add_argument("--reference", default="modernbert-base",
                   help="with --forward: the reference (modernbert-base, modernbert-tiny or a BERT preset)")
    p.add_argument("--bf16", action="store_true", help="with --forward: under bf16 autocast")
    p.add_argument("--out", default=None, help="also write the tables to this file")
    args = p.parse_args(argv)
    parts = [f"python bench/profile_train.py {' '.join(argv if argv is not None else sys.argv[1:])}  "
             f"({time.strftime('%Y-%m-%d %H:%M %Z')}, torch {torch.__version__})"]
    if args.forward:
        for preset, call in _forward_calls(args):
            with torch.inference_mode():
                call()  # warm-up
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    t0 = time.perf_counter()
                    call()
                    seconds = time.perf_counter() - t0
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
            parts.append(f"== {preset}: one forward of {args.batch} x {args.length} tokens"
                         f"{' under bf16 autocast' if args.bf16 else ''} {seconds:.2f} s under the profiler "
                         f"({torch.get_num_threads()} threads)\n{table}")
            print(parts[-1])  # this tool's output
        _write(args.out, parts)
        return
    tt = _bench_module("train_throughput")
    batch = tt.mlm_batch(args.batch, args.length)
    for family, preset in (("m2", args.m2), ("bert", args.bert)):
        wrapped, opt = tt.build(family, preset, args.length)
        tt.train_step(wrapped, wrapped, opt, batch)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            seconds = tt.train_step(wrapped, wrapped, opt, batch)
        events = prof.key_averages()
        table = events.table(sort_by="self_cpu_time_total", row_limit=args.rows)
        calls = sum(e.count for e in events if e.key.startswith("aten::"))
        parts.append(f"== {preset}: one training step {seconds:.2f} s under the profiler ({torch.get_num_threads()} "
                     f"threads, {type(opt).__name__}, {calls} aten calls)\n{table}")
        print(parts[-1])  # this tool's output
    _write(args.out, parts)


def _write(out: str | None, parts: list[str]) -> None:
    if out:
        from m2bert.atomic import atomic_write_text

        atomic_write_text(out, "\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
