"""Embedding throughput: padded to the maximum (the original's retrieval models) vs length-bucketed (ours).

The original's long-context retrieval models assert that every input is padded to
``max_position_embeddings``, because padding leaks into real tokens there, so a 300-token
document costs an 8192-token forward. Our model is padding-invariant, so documents can be
sorted by length and batched with only as much padding as the longest document of the batch
needs. This benchmark embeds the same real documents (``--corpus sample``: windows of WikiText-2
articles with log-uniform lengths up to the maximum; ``retrieval``: the retrieval set's documents;
``m2bert.embeddings.retrieval_data``) both ways with the same model in one process, checks that
the embeddings agree, and reports documents/s and the ratio. Timed passes alternate between the two
ways; each way's best pass is reported with the spread of all passes.

    python bench/embed_throughput.py --shared ../shared --max-length 8192 --docs 1000 \\
        --out bench/results --name embed_throughput_cpu --overwrite
    python bench/embed_throughput.py --shared ../shared --corpus retrieval --out bench/results \\
        --name embed_throughput_cpu_retrieval_set --overwrite
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from m2bert import cli_help

log = logging.getLogger("bench.embed_throughput")

CORPORA = {
    "sample": "windows of WikiText-2 articles, lengths log-uniform up to the maximum (sample_documents)",
    "retrieval": "documents of the offline WikiText-2 retrieval set (load_documents)",
}


def bucketed_batches(lengths: list[int], token_budget: int, multiple: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches whose padded size (rows × longest row, rounded up to
    ``multiple``) stays within ``token_budget``: the memory of one padded-to-maximum batch."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = -(-lengths[i] // multiple) * multiple
        if current and (len(current) + 1) * longest > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(ids: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (pad id 0) and their attention mask."""
    input_ids = torch.zeros(len(ids), length, dtype=torch.long)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return input_ids, mask


@torch.inference_mode()
def embed_all(model: torch.nn.Module, docs: list[list[int]], batches: list[list[int]], length: int | None,
              multiple: int) -> torch.Tensor:
    """Embeddings of every document (in corpus order); each batch padded to ``length`` or, when None,
    to its longest document rounded up to ``multiple``."""
    out = torch.empty(len(docs), model.config.hidden_size)
    for batch in batches:
        rows = [docs[i] for i in batch]
        pad_to = length or -(-max(len(r) for r in rows) // multiple) * multiple
        input_ids, mask = pad_batch(rows, pad_to)
        out[batch] = model.embed(input_ids, mask).float()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from m2bert import M2BertConfig, M2BertModel
    from m2bert.data.tokenizer import load_tokenizer
    from m2bert.embeddings.retrieval_data import load_documents, sample_documents

    torch.manual_seed(0)
    shared = Path(args.shared)
    if args.corpus == "sample":
        texts = sample_documents(shared, n=args.docs, max_tokens=args.max_length)
    else:
        texts = load_documents(shared, max_tokens=args.max_length)[: args.docs]
    tokenizer = load_tokenizer(str(shared / "data" / "bert-base-uncased"))
    docs = [tokenizer(t, truncation=True, max_length=args.max_length)["input_ids"] for t in texts]
    lengths = [len(d) for d in docs]

    config = M2BertConfig.from_preset(args.preset, max_length=args.max_length, vocab_size=tokenizer.vocab_size,
                                      pooling="mean", hidden_dropout_prob=0.0)
    model = M2BertModel(config).eval()
    budget = args.batch * args.max_length
    padded = [list(range(i, min(i + args.batch, len(docs)))) for i in range(0, len(docs), args.batch)]
    bucketed = bucketed_batches(lengths, budget, args.multiple)

    passes: dict[str, list[float]] = {"padded_to_max": [], "bucketed": []}
    embeddings: dict[str, torch.Tensor] = {}
    for rep in range(args.repeats):
        for name in passes:  # alternate: the machine's drift hits both ways alike
            t0 = time.perf_counter()
            emb = embed_all(model, docs, padded if name == "padded_to_max" else bucketed,
                            args.max_length if name == "padded_to_max" else None, args.multiple)
            seconds = time.perf_counter() - t0
            passes[name].append(seconds)
            embeddings[name] = emb
            log.info("pass %d %s: %.1f s (%.2f docs/s)", rep, name, seconds, len(docs) / seconds)
    diff = (embeddings["padded_to_max"] - embeddings["bucketed"]).abs().max().item()
    docs_per_s = {name: len(docs) / min(s) for name, s in passes.items()}
    result = {
        "benchmark": "embed_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "command": "python bench/embed_throughput.py " + " ".join(args.argv),
        "corpus": args.corpus,
        "model": {"preset": args.preset, "max_length": args.max_length, "hidden_size": config.hidden_size,
                  "layers": config.num_hidden_layers, "params": sum(p.numel() for p in model.parameters()),
                  "weights": "random init (throughput does not depend on the values)"},
        "documents": {"count": len(docs), "tokens": sum(lengths), "min_tokens": min(lengths),
                      "median_tokens": int(statistics.median(lengths)), "max_tokens": max(lengths),
                      "truncated_at_max": sum(n == args.max_length for n in lengths)},
        "batches": {"padded_to_max": {"count": len(padded), "rows": args.batch},
                    "bucketed": {"count": len(bucketed), "token_budget": budget, "pad_multiple": args.multiple}},
        "seconds_per_pass": passes,
        "docs_per_s": docs_per_s,
        "ratio": docs_per_s["bucketed"] / docs_per_s["padded_to_max"],
        "ratio_spread": [min(passes["padded_to_max"]) / max(passes["bucketed"]),
                         max(passes["padded_to_max"]) / min(passes["bucketed"])],
        "max_abs_embedding_difference": diff,
    }
    if diff > args.tolerance:
        raise SystemExit(f"embeddings differ by {diff:.3g} > {args.tolerance} between the two ways of batching")
    return result


def write(result: dict[str, Any], out: Path, name: str) -> None:
    from m2bert.atomic import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{name}.json", result)
    d, r = result["documents"], result
    md = [
        f"# Embedding throughput: padded to {r['model']['max_length']} vs length-bucketed",
        "",
        f"{r['date']}, {r['machine']['processor']}, {r['machine']['threads']} threads, torch {r['machine']['torch']}.",
        f"Command: `{r['command']}`",
        "",
        f"Model: {r['model']['preset']} at max length {r['model']['max_length']} "
        f"({r['model']['params'] / 1e6:.1f}M parameters), mean pooling.",
        f"Documents: {d['count']} {CORPORA[r['corpus']]}, {d['tokens']} tokens, "
        f"{d['min_tokens']}–{d['max_tokens']} per document (median {d['median_tokens']}).",
        "",
        "| way | batches | docs/s (best pass) | seconds per pass |",
        "|---|---|---|---|",
    ]
    for way in ("padded_to_max", "bucketed"):
        secs = ", ".join(f"{s:.1f}" for s in r["seconds_per_pass"][way])
        md.append(f"| {way} | {r['batches'][way]['count']} | {r['docs_per_s'][way]:.2f} | {secs} |")
    md += ["", f"**Ratio bucketed / padded: {r['ratio']:.1f}×** (spread over passes "
               f"{r['ratio_spread'][0]:.1f}–{r['ratio_spread'][1]:.1f}×); largest embedding difference "
               f"{r['max_abs_embedding_difference']:.2e}.", ""]
    (out / f"{name}.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(["padded to max", "bucketed"], [r["docs_per_s"]["padded_to_max"], r["docs_per_s"]["bucketed"]],
               color=["tab:gray", "tab:blue"])
        ax.set_ylabel("documents / s")
        ax.set_title(f"{r['model']['preset']}, L≤{r['model']['max_length']}: {r['ratio']:.1f}×")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
    except ImportError:
        log.warning("matplotlib missing: no plot written")


def main(argv: list[str] | None = None) -> None:
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--shared", default="../shared", help="the shared folder (data/wikitext, data/bert-base-uncased)")
    p.add_argument("--preset", default="m2-bert-tiny", help="model size (M2BertConfig preset); default m2-bert-tiny")
    p.add_argument("--max-length", type=int, default=8192, help="the maximum length every input is padded to")
    p.add_argument("--corpus", choices=sorted(CORPORA), default="sample",
                   help="sample: N windows of log-uniform length; retrieval: the retrieval set's documents")
    p.add_argument("--docs", type=int, default=1000, help="documents to embed (at most the corpus's)")
    p.add_argument("--batch", type=int, default=4, help="rows per padded-to-max batch (the token budget of both)")
    p.add_argument("--multiple", type=int, default=128, help="bucketed batches pad to a multiple of this")
    p.add_argument("--repeats", type=int, default=2, help="timed passes of each way, alternating")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed embedding difference")
    cli_help.add_result_args(p, "embed_throughput_cpu", "NAME.json/.md/.png")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if not (Path(args.shared) / "data" / "wikitext").is_dir():
        p.error(f"{args.shared}/data/wikitext not found: pass --shared with the shared data folder")
    cli_help.refuse_overwrite(p, args)
    result = run(args)
    if args.out:
        write(result, Path(args.out), args.name)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
