"""The speed results of M2-BERT vs BERT as one table and one plot, next to issue 11's goals.

Reads the JSONs that ``bench/train_throughput.py`` and ``bench/throughput.py`` wrote (each model at
its best setting, eager or compiled, measured side by side in one process) and writes
``speed_cpu.md`` and ``speed_cpu.png`` beside them. Measures nothing itself.

    python bench/speed_report.py --results bench/results
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from m2bert import cli_help

log = logging.getLogger("bench.speed_report")

# Issue 11's goals: M2-BERT-base / BERT-base, best setting vs best setting, fp32, this CPU.
GOALS = {"train 128": 1.4, "fwd 128": 1.4, "fwd 512": 1.5, "fwd 2048": 1.9, "fwd 8192": 3.2}


def rows(results: Path, train: str, forward: list[str]) -> list[dict[str, Any]]:
    """One row per measurement: what, each model's best setting and tokens/s, the ratio and its spread."""
    out = []
    t = json.loads((results / train).read_text())
    out.append({"what": "train 128", "source": train, "date": t["date"], "m2": t["m2_best"], "bert": t["bert_best"],
                "m2_tps": t["m2_tokens_per_s"], "bert_tps": t["bert_tokens_per_s"], "ratio": t["ratio"],
                "spread": (t["ratio_per_step"]["min"], t["ratio_per_step"]["max"]),
                "settings": {k[: -len("_tokens_per_s")]: v for k, v in t.items()
                             if k.endswith("_tokens_per_s") and k.count("_") > 3}})
    for name in forward:
        f = json.loads((results / name).read_text())
        for length, r in f["lengths"].items():
            out.append({"what": f"fwd {length}", "source": name, "date": f["date"], "m2": r["m2_best"],
                        "bert": r["bert_best"], "m2_tps": r["m2_tok_per_ms"] * 1e3, "bert_tps": r["bert_tok_per_ms"] * 1e3,
                        "ratio": r["ratio"], "spread": (r["ratio_per_round"]["min"], r["ratio_per_round"]["max"]),
                        "settings": {k[: -len("_tok_per_ms")]: v * 1e3 for k, v in r.items()
                                     if k.endswith("_tok_per_ms") and k.count("_") > 3}})
    return out


def markdown(table: list[dict[str, Any]], machine: str) -> str:
    lines = [
        "# Speed: M2-BERT-base (80M) vs BERT-base, each at its best setting",
        "",
        f"{machine}; fp32; steps or calls alternate between the models in one process; the spread is the ratio's "
        "range over the rounds of that alternation. Training: fwd + bwd + DecoupledAdamW, MLM with 30% masking, "
        "batch 16 × 128. Forward: the MLM head included, 2,048 tokens per batch (1 sequence at 8192).",
        "",
        "| measurement | M2 best | BERT best | M2 tokens/s | BERT tokens/s | ratio | spread | goal | every setting (tokens/s) | source |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        settings = ", ".join(f"{k} {v:.0f}" for k, v in r["settings"].items()) or "eager only"
        lines.append(f"| {r['what']} | {r['m2']} | {r['bert']} | {r['m2_tps']:.0f} | {r['bert_tps']:.0f} | "
                     f"**{r['ratio']:.2f}** | {r['spread'][0]:.2f}–{r['spread'][1]:.2f} | "
                     f"{GOALS.get(r['what'], float('nan')):.1f} | {settings} | {r['source']} ({r['date']}) |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = [r["what"] for r in table]
    x = range(len(names))
    ax.bar(x, [r["ratio"] for r in table], color="tab:blue", label="M2 / BERT (best vs best)")
    ax.errorbar(x, [r["ratio"] for r in table], fmt="none", ecolor="black", capsize=3,
                yerr=[[r["ratio"] - r["spread"][0] for r in table], [r["spread"][1] - r["ratio"] for r in table]])
    ax.scatter(x, [GOALS.get(n, float("nan")) for n in names], marker="_", s=400, color="tab:red", label="goal")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("tokens/s ratio")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--results", default="bench/results", help="the folder of the JSONs, where the report goes")
    p.add_argument("--train", default="train_cpu_best.json", help="bench/train_throughput.py's JSON")
    p.add_argument("--forward", nargs="+", default=["throughput_cpu_best.json", "throughput_cpu_8192_eager.json"],
                   help="bench/throughput.py's JSONs")
    p.add_argument("--machine", default="2-core AMD EPYC (this project's CPU machine), 2 threads",
                   help="the machine, as the report names it")
    args = p.parse_args(argv)
    results = Path(args.results)
    for name in [args.train, *args.forward]:
        if not (results / name).is_file():
            p.error(f"{results / name} not found: run the benchmark that writes it first (see the docstring)")
    table = rows(results, args.train, args.forward)
    (results / "speed_cpu.md").write_text(markdown(table, args.machine))
    plot(table, results / "speed_cpu.png")
    log.info("wrote %s and %s", results / "speed_cpu.md", results / "speed_cpu.png")


if __name__ == "__main__":
    main()
