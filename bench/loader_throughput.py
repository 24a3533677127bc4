"""Rows/s the MLM loader delivers (raw-text and pre-tokenised shards) vs. rows/s a tiny M2-BERT trains on.

The loader must not be the bottleneck: ``loader_over_model`` (slowest loader setting / model) should
be well above 1. Offline by default: C4 rows from ../shared (or the docstring sample when absent)
and BERT's vocab from ../shared (or a WordPiece trained on the sample). Prints one JSON object.

    python bench/loader_throughput.py [--docs 1000] [--batch-size 32] [--workers 0 2] [--json out.json]
"""
from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from m2bert import cli_help
from m2bert.paths import shared_dir

log = logging.getLogger("bench.loader_throughput")
SHARED = shared_dir() / "data"


def _data(tmp: Path, source: str | None, tokenizer: str | None) -> tuple[str, str]:
    from m2bert.data.sample import make_sample
    from m2bert.data.tokenizer import train_wordpiece

    if source is None:
        c4 = SHARED / "c4" / "c4_sample.jsonl"
        if c4.is_file():
            source = str(c4)
        else:
            make_sample(tmp / "sample")
            source = str(tmp / "sample" / "c4")
    if tokenizer is None:
        vocab = SHARED / "bert-base-uncased" / "vocab.txt"
        if vocab.is_file():
            tokenizer = str(vocab)
        else:
            tokenizer = str(train_wordpiece([source] if Path(source).is_file() else
                                            sorted(Path(source).rglob("*train*.json")), tmp / "tok", 30522))
    return source, tokenizer


def _loader_rate(root: Path, tok: Any, *, batch_size: int, seq_len: int, workers: int, max_batches: int,
                 seed: int) -> dict[str, float]:
    from m2bert.data.mlm import build_mlm_dataloader

    dl = build_mlm_dataloader(local=str(root), remote=None, split="train", tokenizer=tok, max_seq_len=seq_len,
                              batch_size=batch_size, mlm_probability=0.3, shuffle=True, seed=seed,
                              num_workers=workers)
    t0 = time.perf_counter()
    first = None
    rows = 0
    for i, batch in enumerate(dl):
        if first is None:
            first = time.perf_counter()
        else:
            rows += batch["input_ids"].shape[0]
        if i + 1 >= max_batches:
            break
    end = time.perf_counter()
    steady = rows / (end - first) if first is not None and end > first else 0.0
    return {"rows_per_s": round(steady, 1), "first_batch_s": round((first or end) - t0, 3), "rows": rows}


def _model_rate(tok: Any, batches: list[dict[str, torch.Tensor]], steps: int) -> dict[str, float]:
    from m2bert import M2BertConfig, M2BertForMaskedLM

    torch.manual_seed(0)
    model = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step(b: dict[str, torch.Tensor]) -> float:
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    step(batches[0])  # warm-up
    t0 = time.perf_counter()
    rows = 0
    for i in range(steps):
        b = batches[i % len(batches)]
        step(b)
        rows += b["input_ids"].shape[0]
    dt = time.perf_counter() - t0
    return {"rows_per_s": round(rows / dt, 1), "steps": steps}


def main(argv: list[str] | None = None) -> int:
    ap = cli_help.ArgumentParser(__doc__)
    ap.add_argument("--source", default=None, help="C4 file/folder (default: ../shared c4_sample.jsonl or the sample)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer (default: ../shared BERT vocab.txt)")
    ap.add_argument("--docs", type=int, default=1000, help="documents converted to shards")
    ap.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader worker counts to measure")
    ap.add_argument("--max-batches", type=int, default=60, help="batches read per loader setting")
    ap.add_argument("--train-steps", type=int, default=8, help="timed training steps of the tiny model")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from streaming.base.util import clean_stale_shared_memory

    from m2bert.data.convert_c4 import convert
    from m2bert.data.tokenizer import load_tokenizer

    clean_stale_shared_memory()
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                          "python": platform.python_version(), "torch": torch.__version__},
                              "batch_size": args.batch_size, "seq_len": args.seq_len}
    with tempfile.TemporaryDirectory(prefix="m2bert-loader-bench-") as d:
        tmp = Path(d)
        source, tok_name = _data(tmp, args.source, args.tokenizer)
        tok = load_tokenizer(tok_name)
        result.update(source=source, tokenizer=tok_name, docs=args.docs)
        roots = {"text": tmp / "raw", "tokens": tmp / "tok"}
        t = time.perf_counter()
        convert(source, str(roots["text"]), splits=["train"], limit=args.docs, progress=False)
        conv_raw = time.perf_counter() - t
        t = time.perf_counter()
        convert(source, str(roots["tokens"]), splits=["train"], limit=args.docs, tokenizer=tok_name,
                concat_tokens=args.seq_len, progress=False)
        conv_tok = time.perf_counter() - t
        result["convert_docs_per_s"] = {"text": round(args.docs / conv_raw, 1), "tokens": round(args.docs / conv_tok, 1)}
        result["loader"] = {}
        for mode, root in roots.items():
            for w in args.workers:
                result["loader"][f"{mode}/workers={w}"] = _loader_rate(
                    root, tok, batch_size=args.batch_size, seq_len=args.seq_len, workers=w,
                    max_batches=args.max_batches, seed=len(result["loader"]))
        from m2bert.data.mlm import build_mlm_dataloader

        dl = build_mlm_dataloader(local=str(roots["tokens"]), remote=None, split="train", tokenizer=tok,
                                  max_seq_len=args.seq_len, batch_size=args.batch_size, mlm_probability=0.3,
                                  shuffle=True, seed=99)
        batches = [b for _, b in zip(range(4), dl)]
        result["model"] = {"preset": "m2-bert-tiny", "vocab_size": len(tok), "step": "forward+backward+AdamW",
                           **_model_rate(tok, batches, args.train_steps)}
    slowest = min(v["rows_per_s"] for v in result["loader"].values())
    result["loader_over_model"] = round(slowest / result["model"]["rows_per_s"], 1)
    result["loader_is_bottleneck"] = bool(slowest < result["model"]["rows_per_s"])
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
