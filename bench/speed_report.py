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
    # train_throughput.py measures fp32 only (its JSON says so in "benchmark"); throughput.py records "dtype".
    out.append({"what": "train 128", "source": train, "date": t["date"], "threads": t["threads"], "dtype": "fp32",
                "m2": t["m2_best"], "bert": t["bert_best"],
                "m2_tps": t["m2_tokens_per_s"], "bert_tps": t["bert_tokens_per_s"], "ratio": t["ratio"],
                "spread": (t["ratio_per_step"]["min"], t["ratio_per_step"]["max"]),
                "settings": {k[: -len("_tokens_per_s")]: v for k, v in t.items()
                             if k.endswith("_tokens_per_s") and k.count("_") > 3}})
    for name in forward:
        f = json.loads((results / name).read_text())
        for length, r in f["lengths"].items():
            out.append({"what": f"fwd {length}", "source": name, "date": f["date"], "threads": f["threads"],
                        "dtype": f["dtype"], "m2": r["m2_best"],
                        "bert": r["bert_best"], "m2_tps": r["m2_tok_per_ms"] * 1e3, "bert_tps": r["bert_tok_per_ms"] * 1e3,
                        "ratio": r["ratio"], "spread": (r["ratio_per_round"]["min"], r["ratio_per_round"]["max"]),
                        "settings": {k[: -len("_tok_per_ms")]: v * 1e3 for k, v in r.items()
                                     if k.endswith("_tok_per_ms") and k.count("_") > 3}})
    return out


TITLE = "Speed: M2-BERT-base (80M) vs BERT-base, each at its best setting"


def setup(table: list[dict[str, Any]], machine: str) -> str:
    """Where and how the JSONs were measured, from the JSONs: "<machine>, 2 threads; fp32; 2026-11-29"."""
    def joined(key: str, cut: int | None = None) -> str:
        return " / ".join(sorted({str(r[key])[:cut] for r in table}))

    return f"{machine}, {joined('threads')} threads; {joined('dtype')}; measured {joined('date', 10)}"


def markdown(table: list[dict[str, Any]], machine: str) -> str:
    lines = [
        f"# {TITLE}",
        "",
        f"{setup(table, machine)}; steps or calls alternate between the models in one process; the spread is the ratio's "
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


def plot(table: list[dict[str, Any]], machine: str, path: Path) -> Any:
    """The ratios as bars with their values and spread, the goals as red marks: a chart that reads alone.
    Returns the figure (tests read its labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = [r["what"] for r in table]
    x = range(len(names))
    bars = ax.bar(x, [r["ratio"] for r in table], color="tab:blue", label="M2 / BERT tokens/s (best vs best)")
    ax.bar_label(bars, labels=[f"{r['ratio']:.2f}×" for r in table], label_type="center", color="white",
                 fontsize=9, fontweight="bold")
    ax.errorbar(x, [r["ratio"] for r in table], fmt="none", ecolor="black", capsize=3, label="spread over rounds",
                yerr=[[r["ratio"] - r["spread"][0] for r in table], [r["spread"][1] - r["ratio"] for r in table]])
    goals = [GOALS.get(n, float("nan")) for n in names]
    ax.scatter(x, goals, marker="_", s=500, linewidths=2, color="tab:red", label="goal (issue 11)")
    for i, goal in zip(x, goals):
        ax.annotate(f"{goal:.1f}", (i, goal), xytext=(0, 3), textcoords="offset points", ha="center",
                    fontsize=8, color="tab:red")
    ax.axhline(1.0, color="gray", lw=0.8, label="same speed (1.0)")
    ax.set_xticks(list(x), names)
    ax.set_xlabel("measurement: training step or forward pass, at sequence length (tokens)")
    ax.set_ylabel("tokens/s ratio M2 / BERT")
    ax.set_ylim(0, max(max(goals), max(r["spread"][1] for r in table)) * 1.15)
    ax.set_title(f"{TITLE}\n{setup(table, machine)}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--results", default="bench/results", help="the folder of the JSONs, where the report goes")
    p.add_argument("--train", default="train_cpu_best.json", help="bench/train_throughput.py's JSON")
    p.add_argument("--forward", nargs="+", default=["throughput_cpu_best.json", "throughput_cpu_8192_eager.json"],
                   help="bench/throughput.py's JSONs")
    p.add_argument("--machine", default="CPU: 2-core AMD EPYC (this project's CPU machine)",
                   help="the machine, as the report names it")
    args = p.parse_args(argv)
    results = Path(args.results)
    for name in [args.train, *args.forward]:
        if not (results / name).is_file():
            p.error(f"{results / name} not found: run the benchmark that writes it first (see the docstring)")
    table = rows(results, args.train, args.forward)
    (results / "speed_cpu.md").write_text(markdown(table, args.machine))
    plot(table, args.machine, results / "speed_cpu.png")
    log.info("wrote %s and %s", results / "speed_cpu.md", results / "speed_cpu.png")


if __name__ == "__main__":
    main()
