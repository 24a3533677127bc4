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

``--precision bf16`` embeds under bf16 autocast (weights stay fp32). ``--bf16-check`` also embeds the bucketed
batches in fp32 and under bf16 autocast, alternating, and reports both docs/s and how far bf16 moves each
document's embedding (cosine to fp32: min, mean): bf16 is worth making the CPU default only if it is faster and
every cosine stays ≥ 0.999. ``--reference modernbert`` embeds the same bucketed batches with transformers'
``ModernBertModel`` (ModernBERT-base's shape, or ``--reference-preset modernbert-tiny``; mean pooling, SDPA,
random init, at most 8192 positions) and reports M2's docs/s over its, each at ``--precision``.

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

from m2bert.machine import cpu_flags, cpu_name
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
              multiple: int, bf16: bool = False) -> torch.Tensor:
    """Embeddings of every document (in corpus order); each batch padded to ``length`` or, when None,
    to its longest document rounded up to ``multiple``; ``bf16``: under bf16 autocast."""
    out = torch.empty(len(docs), model.config.hidden_size)
    for batch in batches:
        rows = [docs[i] for i in batch]
        pad_to = length or -(-max(len(r) for r in rows) // multiple) * multiple
        input_ids, mask = pad_batch(rows, pad_to)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out[batch] = _embed(model, input_ids, mask).float()
    return out


def _embed(model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """M2's own ``embed``; for a transformers encoder without one (ModernBERT), its hidden states mean-pooled."""
    if hasattr(model, "embed"):
        return model.embed(input_ids, mask)
    from m2bert.model.pooling import pool

    return pool(model(input_ids=input_ids, attention_mask=mask).last_hidden_state, mask, "mean")


def _throughput_bench():
    """bench/throughput.py, loaded by path (bench/ is a folder of scripts, not a package): its ModernBERT builder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_throughput", Path(__file__).with_name("throughput.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed_passes(ways: dict[str, Any], repeats: int, n_docs: int) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Seconds of each pass of each way (a callable returning the embeddings), passes alternating between the
    ways so that the machine's drift hits all alike; and each way's embeddings."""
    passes: dict[str, list[float]] = {name: [] for name in ways}
    embeddings: dict[str, torch.Tensor] = {}
    for rep in range(repeats):
        for name, way in ways.items():
            t0 = time.perf_counter()
            embeddings[name] = way()
            seconds = time.perf_counter() - t0
            passes[name].append(seconds)
            log.info("pass %d %s: %.1f s (%.2f docs/s)", rep, name, seconds, n_docs / seconds)
    return passes, embeddings


def bf16_check(model: torch.nn.Module, docs: list[list[int]], batches: list[list[int]], multiple: int,
               repeats: int) -> dict[str, Any]:
    """fp32 vs bf16 autocast on the same bucketed batches: docs/s of each, and each document's cosine to fp32."""
    passes, emb = timed_passes({"fp32": lambda: embed_all(model, docs, batches, None, multiple),
                                "bf16": lambda: embed_all(model, docs, batches, None, multiple, bf16=True)},
                               repeats, len(docs))
    cos = torch.nn.functional.cosine_similarity(emb["fp32"], emb["bf16"], dim=-1)
    docs_per_s = {name: len(docs) / min(s) for name, s in passes.items()}
    faster = docs_per_s["bf16"] > docs_per_s["fp32"]
    return {"seconds_per_pass": passes, "docs_per_s": docs_per_s, "speedup": docs_per_s["bf16"] / docs_per_s["fp32"],
            "cosine_to_fp32": {"min": cos.min().item(), "mean": cos.mean().item()},
            "bound": BF16_COSINE_BOUND,
            "bf16_default_warranted": bool(faster and cos.min().item() >= BF16_COSINE_BOUND)}


BF16_COSINE_BOUND = 0.999  # bf16 may become the CPU default only if every embedding keeps this cosine to fp32


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

    bf16 = args.precision == "bf16"
    ways = {"padded_to_max": lambda: embed_all(model, docs, padded, args.max_length, args.multiple, bf16),
            "bucketed": lambda: embed_all(model, docs, bucketed, None, args.multiple, bf16)}
    reference = None
    if args.reference == "modernbert":
        tb = _throughput_bench()
        reference = tb.build_modernbert(args.reference_preset, config.vocab_size, "cpu", torch.float32, "sdpa",
                                        head=False)
        if args.max_length > reference.config.max_position_embeddings:
            raise SystemExit(f"--max-length {args.max_length} exceeds ModernBERT's "
                             f"{reference.config.max_position_embeddings} positions: pass --max-length <= that")
        ways["modernbert_bucketed"] = lambda: embed_all(reference, docs, bucketed, None, args.multiple, bf16)
    passes, embeddings = timed_passes(ways, args.repeats, len(docs))
    diff = (embeddings["padded_to_max"] - embeddings["bucketed"]).abs().max().item()
    docs_per_s = {name: len(docs) / min(s) for name, s in passes.items()}
    result: dict[str, Any] = {
        "benchmark": "embed_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"platform": platform.platform(), "processor": cpu_name(), "cpu_flags": cpu_flags(),
                    "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "command": "python bench/embed_throughput.py " + " ".join(args.argv),
        "corpus": args.corpus,
        "precision": args.precision,
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
    if reference is not None:
        result["reference"] = {
            "model": f"transformers ModernBertModel ({args.reference_preset}), mean pooling, SDPA, random init",
            "params": sum(p.numel() for p in reference.parameters()),
            "docs_per_s": docs_per_s["modernbert_bucketed"],
            "m2_over_modernbert": docs_per_s["bucketed"] / docs_per_s["modernbert_bucketed"]}
    if args.bf16_check:
        result["bf16"] = bf16_check(model, docs, bucketed, args.multiple, args.repeats)
        log.info("bf16 vs fp32: %s", {k: result["bf16"][k] for k in ("speedup", "cosine_to_fp32")})
    if args.tolerance is None:  # bf16 rounds each GEMM's output: batches of other shapes round elsewhere
        args.tolerance = 1e-4 if args.precision == "fp32" else 3e-2
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
    for way in r["seconds_per_pass"]:
        secs = ", ".join(f"{s:.1f}" for s in r["seconds_per_pass"][way])
        count = r["batches"][way.removeprefix("modernbert_")]["count"]
        md.append(f"| {way} | {count} | {r['docs_per_s'][way]:.2f} | {secs} |")
    md += ["", f"**Ratio bucketed / padded: {r['ratio']:.1f}×** (spread over passes "
               f"{r['ratio_spread'][0]:.1f}–{r['ratio_spread'][1]:.1f}×); largest embedding difference "
               f"{r['max_abs_embedding_difference']:.2e}.", ""]
    if "reference" in r:
        md += [f"Reference: {r['reference']['model']}, {r['reference']['params'] / 1e6:.1f}M parameters, the same "
               f"bucketed batches: **M2 / ModernBERT {r['reference']['m2_over_modernbert']:.2f}×** docs/s.", ""]
    if "bf16" in r:
        b = r["bf16"]
        md += [f"bf16 autocast vs fp32 (bucketed): {b['docs_per_s']['bf16']:.2f} vs {b['docs_per_s']['fp32']:.2f} "
               f"docs/s (**{b['speedup']:.2f}×**); cosine to fp32 min {b['cosine_to_fp32']['min']:.5f}, mean "
               f"{b['cosine_to_fp32']['mean']:.5f} (bound {b['bound']}): bf16 as the CPU default is "
               f"{'warranted' if b['bf16_default_warranted'] else 'not warranted'}.", ""]
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
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest allowed embedding difference (default 1e-4 in fp32, 3e-2 under bf16)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: embed under bf16 autocast")
    p.add_argument("--bf16-check", action="store_true",
                   help="also time fp32 vs bf16 autocast on the bucketed batches and report the cosine between them")
    p.add_argument("--reference", choices=["none", "modernbert"], default="none",
                   help="modernbert: also embed the bucketed batches with transformers' ModernBertModel")
    p.add_argument("--reference-preset", choices=["modernbert-base", "modernbert-tiny"], default="modernbert-base",
                   help="the reference's size")
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
