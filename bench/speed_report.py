"""The speed results of M2-BERT vs BERT-base and vs ModernBERT-base as one table and one plot, next to the goals.

Reads the JSONs that ``bench/train_throughput.py`` and ``bench/throughput.py`` wrote (each model at
its best setting, eager / compiled / bf16 autocast, measured side by side in one process, the spread over the
rounds of the alternation) and writes ``speed_cpu.md`` and ``speed_cpu.png`` beside them; ``--readme`` also
puts the table into README.md between its ``speed_report`` markers. Measures nothing itself. The ModernBERT
JSON (``bench/speed24.sh`` writes it) is optional: without it the report says it was not measured.

    python bench/speed_report.py --results bench/results --readme README.md
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from m2bert import cli_help

log = logging.getLogger("bench.speed_report")

# The goals, M2-BERT-base (80M) / reference, best setting vs best setting, this CPU: issue 11's vs BERT-base,
# issue 24's vs ModernBERT-base (forward) and for training.
GOALS = {"train 128": 1.4, "fwd 128": 1.4, "fwd 512": 1.5, "fwd 2048": 1.9, "fwd 8192": 3.2,
         "fwd 512 vs ModernBERT": 1.3, "fwd 8192 vs ModernBERT": 2.0}
MIN_REPEATS = 3  # fewer timed rounds than this give no spread worth the name: the row says so
REFERENCE_NAMES = {"bert": "BERT", "modernbert": "ModernBERT"}
README_START, README_END = "<!-- speed_report: start -->", "<!-- speed_report: end -->"


def forward_rows(name: str, f: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one bench/throughput.py JSON (older ones have no ``reference`` key: BERT)."""
    ref = f.get("reference", "bert")
    suffix = "" if ref == "bert" else f" vs {REFERENCE_NAMES[ref]}"
    out = []
    for length, r in f["lengths"].items():
        row = {"what": f"fwd {length}{suffix}", "reference": REFERENCE_NAMES[ref], "source": name, "date": f["date"], "machine": f.get("machine"),
               "threads": f["threads"], "dtype": f["dtype"], "repeats": f.get("repeats", MIN_REPEATS),
               "m2": r["m2_best"], "m2_tps": r["m2_tok_per_ms"] * 1e3, "m2_rss": r.get("m2_peak_rss_mb"),
               "settings": {k[: -len("_tok_per_ms")]: v * 1e3 for k, v in r.items()
                            if k.endswith("_tok_per_ms") and k.count("_") > 3}}
        if "ratio" in r:
            row.update(ref_best=r[f"{ref}_best"], ref_tps=r[f"{ref}_tok_per_ms"] * 1e3, ratio=r["ratio"],
                       spread=(r["ratio_per_round"]["min"], r["ratio_per_round"]["max"]),
                       ref_rss=r.get(f"{ref}_peak_rss_mb"))
        else:  # M2 alone: beyond the reference's positions
            row.update(ref_best=r.get(ref, "not run"), ref_tps=None, ratio=None, spread=None, ref_rss=None,
                       m2_embed_rss=r.get("m2_embed_peak_rss_mb"))
        out.append(row)
    return out


def rows(results: Path, train: str, forward: list[str]) -> list[dict[str, Any]]:
    """One row per measurement: what, each model's best setting and tokens/s, the ratio and its spread."""
    out = []
    t = json.loads((results / train).read_text())
    # Weights are fp32 in both benchmarks ("dtype"); bf16 autocast is a setting ("*_bf16"), named in each row.
    out.append({"what": "train 128", "reference": "BERT", "source": train, "date": t["date"], "machine": t.get("machine"),
                "threads": t["threads"],
                "dtype": "fp32", "repeats": t["steps"], "m2": t["m2_best"], "ref_best": t["bert_best"],
                "m2_tps": t["m2_tokens_per_s"], "ref_tps": t["bert_tokens_per_s"], "ratio": t["ratio"],
                "spread": (t["ratio_per_step"]["min"], t["ratio_per_step"]["max"]), "m2_rss": None, "ref_rss": None,
                "settings": {k[: -len("_tokens_per_s")]: v for k, v in t.items()
                             if k.endswith("_tokens_per_s") and k.count("_") > 3}})
    for name in forward:
        out += forward_rows(name, json.loads((results / name).read_text()))
    return out


TITLE = "Speed: M2-BERT-base (80M) vs BERT-base and ModernBERT-base, each at its best setting"


def setup(table: list[dict[str, Any]], machine: str) -> str:
    """Where and how the JSONs were measured, from the JSONs: "<machine>, 2 threads; fp32; 2026-11-29"."""
    def joined(key: str, cut: int | None = None) -> str:
        return " / ".join(sorted({str(r[key])[:cut] for r in table}))

    return f"{machine}, {joined('threads')} threads; weights {joined('dtype')}; measured {joined('date', 10)}"


def machine_label(table: list[dict[str, Any]]) -> str:
    """"CPU: <model>" from the JSONs; ratios measured on different CPUs do not compare, so a mix is named as one
    (and warned about) rather than hidden behind one label."""
    names = sorted({str(r.get("machine") or "unrecorded") for r in table})
    if len(names) > 1:
        log.warning("the JSONs were measured on different CPUs (%s): rerun bench/speed24.sh on one machine",
                    "; ".join(names))
        return "CPUs (MIXED, not comparable): " + "; ".join(names)
    return f"CPU: {names[0]}"


def _num(value: float | None, fmt: str, missing: str = "—") -> str:
    return missing if value is None else format(value, fmt)


def table_lines(table: list[dict[str, Any]]) -> list[str]:
    """The table itself (also what README.md shows between its markers)."""
    lines = [
        "| measurement | reference | M2 best | reference best | M2 tokens/s | reference tokens/s | ratio | spread (rounds) "
        "| goal | peak RSS MB (M2 / reference) | every setting (tokens/s) | source |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        settings = ", ".join(f"{k} {v:.0f}" for k, v in r["settings"].items()) or "eager only"
        spread = "—" if r["spread"] is None else f"{r['spread'][0]:.2f}–{r['spread'][1]:.2f} ({r['repeats']})"
        if r["spread"] is not None and r["repeats"] < MIN_REPEATS:
            spread += f", fewer than {MIN_REPEATS} rounds"
        ratio = "M2 alone" if r["ratio"] is None else f"**{r['ratio']:.2f}**"
        rss = f"{_num(r['m2_rss'], '.0f')} / {_num(r['ref_rss'], '.0f')}"
        if r.get("m2_embed_rss") is not None:
            rss += f" (M2 embedding, no MLM head: {r['m2_embed_rss']:.0f})"
        lines.append(f"| {r['what']} | {r['reference']} | {r['m2']} | {r['ref_best']} | {r['m2_tps']:.0f} | "
                     f"{_num(r['ref_tps'], '.0f')} | {ratio} | {spread} | {_num(GOALS.get(r['what']), '.1f')} | {rss} | "
                     f"{settings} | {r['source']} ({r['date']}) |")
    return lines


def markdown(table: list[dict[str, Any]], machine: str, missing: list[str] = ()) -> str:
    lines = [
        f"# {TITLE}",
        "",
        f"{setup(table, machine)}; steps or calls alternate between the models in one process; the spread is the ratio's "
        "range over the rounds of that alternation (their count in brackets). Training: fwd + bwd + DecoupledAdamW, "
        "MLM with 30% masking, batch 16 × 128. Forward: the MLM head included, 2,048 tokens per batch (1 sequence at "
        "8192 and beyond). ModernBERT-base: transformers' ModernBertForMaskedLM at the published shape, SDPA; it takes "
        "at most 8,192 positions, so at 32,768 M2 runs alone. Settings: eager / compiled (torch.compile), `_bf16` = "
        "under bf16 autocast. Peak RSS: a fresh process per model and length, one call at its best setting.",
        "",
        *table_lines(table),
    ]
    lines += [f"\n{name}: not measured yet (bench/speed24.sh writes it)." for name in missing]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: list[dict[str, Any]], machine: str) -> None:
    """README.md's speed table, between its markers, from the same rows as speed_cpu.md."""
    text = readme.read_text()
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    block = [README_START, "", f"{setup(table, machine)} (`bench/results/speed_cpu.md`, written by "
             "`bench/speed_report.py`):", "", *table_lines(table), "", README_END]
    from m2bert.atomic import atomic_write_text

    atomic_write_text(readme, head + "\n".join(block) + tail)


def plot(table: list[dict[str, Any]], machine: str, path: Path) -> Any:
    """The ratios as bars (blue: vs BERT-base, green: vs ModernBERT-base) with their values and spread, the goals
    as red marks: a chart that reads alone. Rows where M2 ran alone have no ratio and no bar. Returns the figure
    (tests read its labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [r for r in table if r["ratio"] is not None]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(table)), 4.6))
    names = [r["what"].replace(" vs ", "\nvs\n") for r in table]  # three short lines: the bars stay narrow
    x = list(range(len(names)))
    for ref, color in (("BERT", "tab:blue"), ("ModernBERT", "tab:green")):
        idx = [i for i, r in enumerate(table) if r["reference"] == ref]
        if not idx:
            continue
        bars = ax.bar(idx, [table[i]["ratio"] for i in idx], color=color,
                      label=f"M2 / {ref}-base tokens/s (best vs best)")
        ax.bar_label(bars, labels=[f"{table[i]['ratio']:.2f}×" for i in idx], label_type="center", color="white",
                     fontsize=9, fontweight="bold")
    ax.errorbar(x, [r["ratio"] for r in table], fmt="none", ecolor="black", capsize=3, label="spread over rounds",
                yerr=[[max(0.0, r["ratio"] - r["spread"][0]) for r in table],
                      [max(0.0, r["spread"][1] - r["ratio"]) for r in table]])  # best vs best may lie outside
    goals = [GOALS.get(r["what"], float("nan")) for r in table]
    ax.scatter(x, goals, marker="_", s=500, linewidths=2, color="tab:red", label="goal (issues 11 and 24)")
    for i, goal in zip(x, goals):
        if goal == goal:
            ax.annotate(f"{goal:.1f}", (i, goal), xytext=(0, 3), textcoords="offset points", ha="center",
                        fontsize=8, color="tab:red")
    ax.axhline(1.0, color="gray", lw=0.8, label="same speed (1.0)")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_xlabel("measurement: training step or forward pass, at sequence length (tokens)")
    ax.set_ylabel("tokens/s ratio M2 / reference")
    ax.set_ylim(0, max(max((g for g in goals if g == g), default=1.0), max(r["spread"][1] for r in table)) * 1.15)
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
    p.add_argument("--forward", nargs="+", default=["throughput_cpu_best.json"],
                   help="bench/throughput.py's JSONs (vs BERT-base)")
    p.add_argument("--modernbert", default="throughput_cpu_modernbert.json",
                   help="bench/throughput.py --reference modernbert's JSON (optional: reported as not measured)")
    p.add_argument("--readme", default=None, help="also write the table into this README between its markers")
    p.add_argument("--machine", default=None,
                   help="the machine, as the report names it (default: the CPU model the JSONs recorded)")
    args = p.parse_args(argv)
    results = Path(args.results)
    for name in [args.train, *args.forward]:
        if not (results / name).is_file():
            p.error(f"{results / name} not found: run the benchmark that writes it first (see the docstring)")
    if args.readme:  # checked before any work: the table would have nowhere to go
        text = Path(args.readme).read_text() if Path(args.readme).is_file() else ""
        if README_START not in text or README_END not in text:
            p.error(f"{args.readme} has no {README_START} ... {README_END} block: add the two markers where the "
                    "speed table goes")
    forward, missing = list(args.forward), []
    if (results / args.modernbert).is_file():
        forward.append(args.modernbert)
    else:
        missing.append(args.modernbert)
        log.warning("%s not found: the report has no ModernBERT rows (bench/speed24.sh measures them)",
                    results / args.modernbert)
    table = rows(results, args.train, forward)
    if args.machine is None:
        args.machine = machine_label(table)
    from m2bert.atomic import atomic_write_text

    atomic_write_text(results / "speed_cpu.md", markdown(table, args.machine, missing))
    plot(table, args.machine, results / "speed_cpu.png")
    if args.readme:
        update_readme(Path(args.readme), table, args.machine)
    log.info("wrote %s and %s", results / "speed_cpu.md", results / "speed_cpu.png")


if __name__ == "__main__":
    main()
