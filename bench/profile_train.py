"""Where a training step's CPU time goes: torch.profiler's top operators for M2-BERT and the BERT baseline.

One MLM training step (fwd + bwd + optimizer) per model after a warm-up step, the same batch for both, as
bench/train_throughput.py builds them; prints each model's table of operators by self CPU time.

    python bench/profile_train.py --rows 12                 # m2-bert-base-80m vs bert-base, L=128, batch 16
    python bench/profile_train.py --m2 m2-bert-tiny --bert bert-tiny --rows 5
    python bench/profile_train.py --out bench/results/profile_train_cpu.txt   # also kept as a file
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


def _train_throughput():
    """bench/train_throughput.py, loaded by path (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_train_throughput", Path(__file__).with_name("train_throughput.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--m2", default="m2-bert-base-80m", help="M2BertConfig preset")
    p.add_argument("--bert", default="bert-base", help="BERT baseline preset")
    p.add_argument("--rows", type=int, default=12, help="operators listed per model")
    p.add_argument("--out", default=None, help="also write the tables to this file")
    args = p.parse_args(argv)
    tt = _train_throughput()
    batch = tt.mlm_batch(args.batch, args.length)
    parts = [f"python bench/profile_train.py {' '.join(argv if argv is not None else sys.argv[1:])}  "
             f"({time.strftime('%Y-%m-%d %H:%M %Z')}, torch {torch.__version__})"]
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
    if args.out:
        from m2bert.atomic import atomic_write_text

        atomic_write_text(args.out, "\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
