"""Aggregating GLUE jobs: per-task mean/median over seeds, the GLUE average, results.json/.csv, the
Markdown table beside the published row, a bar chart, and the Hydra sweep report.

Scores use the paper's metric set (HazyResearch/m2 ``bert/src/glue/finetuning_jobs.py``): MNLI = mean of
matched and mismatched accuracy, QQP = mean(accuracy, F1), MRPC = F1, STS-B = Spearman, CoLA = Matthews,
the rest accuracy (``GlueTask.score_metrics``). Every other metric GLUE reports (MRPC accuracy, STS-B
Pearson) stays in the detail table, marked as not part of the score. A task's score is the mean over
seeds of that average, ×100; the GLUE average is the mean of the task scores over the paper's 8 tasks
that were run (WNLI and the sample tasks are reported apart). Printed values are rounded half-up, as
the paper's tables are.
"""
from __future__ import annotations

import csv
import glob
import json
import logging
import math
import os
import statistics
import textwrap
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from m2bert.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

# The paper's table: its columns, in its order; (our task, published key, header).
PAPER_COLUMNS = [("mnli", "mnli", "MNLI (m/mm)"), ("rte", "rte", "RTE"), ("qnli", "qnli", "QNLI"),
                 ("qqp", "qqp", "QQP"), ("sst2", "sst2", "SST-2"), ("stsb", "stsb", "STS-B"),
                 ("cola", "cola", "CoLA"), ("mrpc", "mrpc", "MRPC")]
GLUE_AVERAGE_TASKS = tuple(c[0] for c in PAPER_COLUMNS)
# The published numbers travel with the package, so an installed m2bert prints the comparison row too.
PUBLISHED_RESOURCE = "published.json"


def score_metrics(task: str) -> tuple[str, ...]:
    """The metrics a task's score averages (the paper's set); unknown tasks score on all their metrics."""
    from m2bert.data.glue_tasks import get_task

    try:
        return get_task(task).score_metrics
    except KeyError:
        return ()


def job_score(task: str, metrics: dict[str, dict[str, float]]) -> float:
    """A job's score ×100: the mean of the task's score metrics over its eval splits (MNLI: m and mm)."""
    keep = score_metrics(task)
    values = [v for ms in metrics.values() for m, v in ms.items() if not keep or m in keep]
    if not values:
        raise ValueError(f"{task}: none of the score metrics {list(keep)} in {metrics}")
    return 100.0 * sum(values) / len(values)


def fmt(v: float | None, digits: int = 1) -> str:
    """Round half-up, as the paper's tables do (80.85 → 80.9, where Python's format gives 80.8)."""
    if v is None:
        return "–"
    return str(Decimal(repr(float(v))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "median": statistics.median(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def aggregate(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-task statistics over seeds (each metric ×100, and the task score) and the GLUE average."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for j in jobs:
        by_task.setdefault(j["task"], []).append(j)
    tasks: dict[str, Any] = {}
    for task, js in by_task.items():
        keys = [(split, m) for split, ms in js[0]["metrics"].items() for m in ms]
        keep = score_metrics(task)
        metric_stats = {}
        for split, m in keys:
            name = m if len(js[0]["metrics"]) == 1 else f"{split}/{m}"
            metric_stats[name] = {**_stats([100.0 * j["metrics"][split][m] for j in js]), "in_score": not keep or m in keep}
        tasks[task] = {"seeds": [j["seed"] for j in js], "metrics": metric_stats,
                       "score_metrics": list(keep), "score": _stats([job_score(task, j["metrics"]) for j in js])}
    ran = [t for t in GLUE_AVERAGE_TASKS if t in tasks]
    # A non-finite task score (e.g. Pearson of constant predictions) is left out of the average and named.
    in_avg = [t for t in ran if math.isfinite(tasks[t]["score"]["mean"])]
    excluded = [t for t in ran if t not in in_avg]
    if excluded:
        log.warning("GLUE average leaves out %s: non-finite score", excluded)
    glue = statistics.fmean(tasks[t]["score"]["mean"] for t in in_avg) if in_avg else None
    return {"tasks": tasks, "glue_average": glue, "glue_average_tasks": in_avg, "glue_average_excluded": excluded}


def load_published(path: str | os.PathLike[str] | None, model_size: str) -> dict[str, float] | None:
    """The published GLUE dev row for a model size: from ``path`` if given, else the package's copy."""
    if path:
        p = Path(path)
        if not p.is_file():
            log.warning("published numbers not found at %s; tables will have no published row", p)
            return None
        data = json.loads(p.read_text())
    else:
        data = json.loads(resources.files("m2bert.glue").joinpath(PUBLISHED_RESOURCE).read_text())
    return data.get("glue_dev", {}).get(model_size)




def published_mean(published: dict[str, float] | None, tasks: list[str]) -> float | None:
    """The published mean over ``tasks`` (the tasks this run averaged), to stand beside ours: the paper's own
    average when all eight ran, else the mean of its per-task values, None if one of them is not published."""
    if not published or not tasks:
        return None
    if set(tasks) == set(GLUE_AVERAGE_TASKS) and published.get("average") is not None:
        return published["average"]
    values = [published.get(t) for t in tasks]
    return statistics.fmean(values) if all(v is not None for v in values) else None  # type: ignore[arg-type]


def subsets_note(settings: dict[str, Any] | None) -> str:
    """``on subsets (train 256 rows, dev 128 rows per task)``, or "" for a run on the full sets."""
    settings = settings or {}
    parts = [f"{name} {settings[key]} rows" for key, name in (("train_subset", "train"), ("eval_subset", "dev"))
             if settings.get(key)]
    return f"on subsets ({', '.join(parts)} per task)" if parts else ""


def settings_block(settings: dict[str, Any] | None) -> str:
    """What the run was (start model, recipe, duration, subsets, seeds): the lines under the results' title."""
    if not settings:
        return ""

    def show(value: Any, none: str) -> str:
        if isinstance(value, dict):
            return "; ".join(f"{k} {show(v, none)}" for k, v in value.items())
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return none if value is None else str(value)

    rows = [("start model", f"{settings.get('start_model')} ({settings.get('start_kind')}: {settings.get('start')})"),
            ("recipe", f"glue.model_size={settings.get('recipe')}"),
            ("max_duration", show(settings.get("max_duration"), "the recipe's")),
            ("train_subset", show(settings.get("train_subset"), "null (full training sets)")),
            ("eval_subset", show(settings.get("eval_subset"), "null (full dev sets)")),
            ("seeds", show(settings.get("seeds"), "–"))]
    return "\n".join(f"- {name}: {value}" for name, value in rows)


def results_title(label: str, settings: dict[str, Any] | None) -> str:
    note = subsets_note(settings)
    return f"GLUE dev results: {label}" + (f", {note}" if note else "")


def _mnli_cell(agg: dict[str, Any]) -> str:
    t = agg["tasks"].get("mnli")
    if t is None:
        return "–"
    m = t["metrics"].get("validation_matched/accuracy", {}).get("mean")
    mm = t["metrics"].get("validation_mismatched/accuracy", {}).get("mean")
    return f"{fmt(m)} / {fmt(mm)}"


def _row_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown_table(agg: dict[str, Any], published: dict[str, float] | None, label: str, model_size: str) -> str:
    """The paper's GLUE table (this run's row, then the published row), a row for tasks outside the paper's
    eight (WNLI, the sample tasks) if any ran, then per-task detail (every metric, mean/median/std over seeds)."""
    blocks: list[str] = []
    if any(t in agg["tasks"] for t in GLUE_AVERAGE_TASKS):
        header = ["Model"] + [c[2] for c in PAPER_COLUMNS] + ["GLUE avg"]
        ours = [label]
        for task, _, _ in PAPER_COLUMNS:
            t = agg["tasks"].get(task)
            ours.append(_mnli_cell(agg) if task == "mnli" else (fmt(t["score"]["mean"]) if t else "–"))
        rows = [ours + [fmt(agg["glue_average"])]]
        if published:
            pub = [f"{model_size} (published)"]
            for task, key, _ in PAPER_COLUMNS:
                if task == "mnli" and "mnli_m" in published:
                    pub.append(f"{fmt(published.get('mnli_m'))} / {fmt(published.get('mnli_mm'))}")
                else:
                    pub.append(fmt(published.get(key)))
            rows.append(pub + [fmt(published_mean(published, agg["glue_average_tasks"]))])
        text = "\n".join(_row_table(header, rows))
        missing = [c[2] for c in PAPER_COLUMNS if c[0] not in agg["tasks"]]
        if missing:
            text += (f"\n\nNot run: {', '.join(missing)}; the GLUE average is over the "
                     f"{len(agg['glue_average_tasks'])} tasks run")
            text += (f", and so is the published one beside it (the paper's over all eight: "
                     f"{fmt(published.get('average'))})." if published else ".")
        if agg.get("glue_average_excluded"):
            text += f"\n\nLeft out of the GLUE average (non-finite score): {', '.join(agg['glue_average_excluded'])}."
        blocks.append(text)
    other = [t for t in agg["tasks"] if t not in GLUE_AVERAGE_TASKS]
    if other:
        rows = [[label] + [fmt(agg["tasks"][t]["score"]["mean"]) for t in other]]
        blocks.append("Tasks outside the paper's GLUE average:\n\n" + "\n".join(_row_table(["Model"] + other, rows)))
    detail = ["| Task | Seeds | Metric | Mean | Median | Std |", "|---|---|---|---:|---:|---:|"]
    for task, t in agg["tasks"].items():
        seeds = ",".join(str(s) for s in t["seeds"])
        score_name = f"score ({' + '.join(t.get('score_metrics') or ['all metrics'])})"
        for name, st in list(t["metrics"].items()) + [(score_name, t["score"])]:
            label = name if st.get("in_score", True) else f"{name} (not in score)"
            detail.append(f"| {task} | {seeds} | {label} | {fmt(st['mean'], 2)} | {fmt(st['median'], 2)} | "
                          f"{fmt(st['std'], 2)} |")
    blocks.append("\n".join(detail))
    return "\n\n".join(blocks) + "\n"


def write_csv(path: str, jobs: list[dict[str, Any]], agg: dict[str, Any]) -> None:
    """Long format: one row per job metric (level=job), then per-task statistics, then the GLUE average."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["level", "task", "seed", "metric", "value", "mean", "median", "std", "n", "time_s"])
        for j in jobs:
            for split, ms in j["metrics"].items():
                for m, v in ms.items():
                    name = m if len(j["metrics"]) == 1 else f"{split}/{m}"
                    w.writerow(["job", j["task"], j["seed"], name, f"{100 * v:.4f}", "", "", "", "", j.get("time_s", "")])
            w.writerow(["job", j["task"], j["seed"], "score", f"{job_score(j['task'], j['metrics']):.4f}", "", "", "", "",
                        j.get("time_s", "")])
        for task, t in agg["tasks"].items():
            for name, st in list(t["metrics"].items()) + [("score", t["score"])]:
                w.writerow(["task", task, "", name, "", f"{st['mean']:.4f}", f"{st['median']:.4f}", f"{st['std']:.4f}", st["n"], ""])
        if agg["glue_average"] is not None:
            w.writerow(["glue", "average", "", "score", "", f"{agg['glue_average']:.4f}", "", "", len(agg["glue_average_tasks"]), ""])


def grouped_bars(ax: Any, groups: list[str], series: list[tuple[str, list[float | None], list[float] | None]]) -> None:
    """Bars of several series side by side, centred on each group, each bar labelled with its value.

    A series may lack a value for a group (None): the group's remaining bars stay centred. The value
    axis starts a little below the lowest bar, since these charts are read for 1–2 point differences.
    """
    width = 0.8 / max(len(series), 1)
    values = [v for _, vals, _ in series for v in vals if v is not None]
    for g, _group in enumerate(groups):
        present = [k for k, (_, vals, _) in enumerate(series) if vals[g] is not None]
        for slot, k in enumerate(present):
            name, vals, errs = series[k]
            x = g + (slot - (len(present) - 1) / 2) * width
            err = errs[g] if errs and errs[g] else None
            bar = ax.bar(x, vals[g], width * 0.95, yerr=err, capsize=3, color=f"C{k}",
                         hatch="//" if name == "published" else None, label=name)
            ax.bar_label(bar, labels=[fmt(vals[g])], fontsize=7, padding=2)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xticks(list(range(len(groups))), groups, rotation=30, ha="right")
    if values:
        low, high = min(values), max(values)
        pad = max(2.0, 0.1 * (high - low))
        ax.set_ylim(low - pad if low < 0 else max(0.0, low - pad), high + pad)


def bar_chart(path: str, agg: dict[str, Any], published: dict[str, float] | None, label: str,
              settings: dict[str, Any] | None = None) -> str:
    """Bars per task: this run's score (mean, error bar = std over seeds) beside the published value; the average
    bars compare like with like (both over the tasks this run averaged). The title says what the run was."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m2bert.train.loss_chart import save_png

    tasks = list(agg["tasks"])
    ours: list[float | None] = [agg["tasks"][t]["score"]["mean"] for t in tasks]
    err = [agg["tasks"][t]["score"]["std"] for t in tasks]
    pub = [(published or {}).get(t) for t in tasks]
    if agg["glue_average"] is not None:
        n = len(agg["glue_average_tasks"])
        average = "GLUE avg" if n == len(GLUE_AVERAGE_TASKS) else f"GLUE avg ({n} task{'s' * (n > 1)})"
        tasks, ours, err = tasks + [average], ours + [agg["glue_average"]], err + [0.0]
        pub = pub + [published_mean(published, agg["glue_average_tasks"])]
    names = {task: header.split(" ")[0] for task, _, header in PAPER_COLUMNS} | {"wnli": "WNLI"}
    series: list[tuple[str, list[float | None], list[float] | None]] = [(label, ours, err)]
    if any(p is not None for p in pub):
        series.append(("published", pub, None))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks)), 4.0))
    grouped_bars(ax, [names.get(t, t) for t in tasks], series)
    ax.set_ylabel("task score ×100 (the paper's metric set)")
    glue_shown = any(t in GLUE_AVERAGE_TASKS for t in agg["tasks"])
    title = ("GLUE dev" if glue_shown else "Fine-tuning tasks (dev)") + f": {label}"
    if settings:
        duration = settings.get("max_duration")
        facts = [str(settings.get("start_model"))] + ([f"max_duration {duration}"] if isinstance(duration, str) else [])
        note = subsets_note(settings)
        title += "\n" + textwrap.fill(", ".join(facts + ([note] if note else [])), width=int(fig.get_figwidth() * 11))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path


def write_results(run_dir: str, jobs: list[dict[str, Any]], model_size: str, label: str,
                  published_path: str | None = None, plot: bool = True, extra: dict[str, Any] | None = None,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json, results.csv, results.md (+ glue.png); returns the results dict with the table and paths.
    ``settings`` (start model, max_duration, subsets, seeds: ``driver.run_settings``) head each of them."""
    agg = aggregate(jobs)
    published = load_published(published_path, model_size)
    table = markdown_table(agg, published, label, model_size)
    paths = {"json": os.path.join(run_dir, "results.json"), "csv": os.path.join(run_dir, "results.csv"),
             "markdown": os.path.join(run_dir, "results.md")}
    os.makedirs(run_dir, exist_ok=True)
    if plot:
        paths["chart"] = bar_chart(os.path.join(run_dir, "glue.png"), agg, published, label, settings)
    results = {**(extra or {}), "model_size": model_size, "label": label, "settings": settings, "jobs": jobs, **agg,
               "published": published,
               "published_average_same_tasks": published_mean(published, agg["glue_average_tasks"]),
               "table": table, "paths": paths}
    write_csv(paths["csv"], jobs, agg)
    block = settings_block(settings)
    atomic_write_text(paths["markdown"], f"# {results_title(label, settings)}\n\n" + (f"{block}\n\n" if block else "")
                      + table)
    atomic_write_json(paths["json"], results)
    return results


# ---------------------------------------------------------------- sweeps


def _varying(settings: list[list[str]]) -> list[list[str]]:
    """Only the overrides whose value differs between sweep jobs (the swept ones)."""
    parsed = [dict(o.split("=", 1) if "=" in o else (o, "") for o in s) for s in settings]
    keys = sorted({k for p in parsed for k in p})
    vary = [k for k in keys if len({p.get(k) for p in parsed}) > 1] or keys
    return [[f"{k}={p[k]}" for k in vary if k in p] for p in parsed]


def sweep_report(sweep_dir: str) -> dict[str, Any] | None:
    """Read every job's results.json under a multirun dir; one row per (setting, task) with the task
    score's mean ± std over seeds; the best setting per task is marked. Writes sweep_report.{md,json,csv}."""
    files = sorted(glob.glob(os.path.join(sweep_dir, "*", "results.json")),
                   key=lambda p: (len(p), p))
    runs = []
    for f in files:
        with open(f) as fh:
            r = json.load(fh)
        runs.append({"dir": os.path.dirname(f), "overrides": r.get("overrides", []), "tasks": r["tasks"]})
    if not runs:
        log.warning("sweep report: no results.json under %s", sweep_dir)
        return None
    labels = _varying([r["overrides"] for r in runs])
    rows = []
    for r, lab in zip(runs, labels):
        for task, t in r["tasks"].items():
            rows.append({"setting": " ".join(lab) or "(defaults)", "task": task, "seeds": len(t["seeds"]),
                         "mean": t["score"]["mean"], "std": t["score"]["std"], "dir": r["dir"],
                         "metrics": {k: v["mean"] for k, v in t["metrics"].items()}, "best": False})
    for task in {row["task"] for row in rows}:
        best = max((row for row in rows if row["task"] == task), key=lambda row: row["mean"])
        best["best"] = True
    rows.sort(key=lambda row: (row["task"], -row["mean"]))
    lines = ["| Task | Setting | Seeds | Score (mean ± std) | Metrics (mean) | Best |", "|---|---|---:|---:|---|:---:|"]
    for row in rows:
        ms = ", ".join(f"{k} {v:.2f}" for k, v in row["metrics"].items())
        lines.append(f"| {row['task']} | {row['setting']} | {row['seeds']} | {row['mean']:.2f} ± {row['std']:.2f} | {ms} | "
                     f"{'**best**' if row['best'] else ''} |")
    table = "\n".join(lines) + "\n"
    paths = {"markdown": os.path.join(sweep_dir, "sweep_report.md"), "json": os.path.join(sweep_dir, "sweep_report.json"),
             "csv": os.path.join(sweep_dir, "sweep_report.csv")}
    Path(paths["markdown"]).write_text(f"# GLUE sweep report\n\n{sweep_dir}\n\n{table}")
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "setting", "seeds", "mean", "std", "best", "dir"])
        for row in rows:
            w.writerow([row["task"], row["setting"], row["seeds"], f"{row['mean']:.4f}", f"{row['std']:.4f}",
                        int(row["best"]), row["dir"]])
    report = {"sweep_dir": sweep_dir, "rows": rows, "table": table, "paths": paths}
    atomic_write_json(paths["json"], report)
    return report


class SweepReportCallback(Callback):
    """Hydra callback: after a multirun, aggregate the jobs' results into the sweep report."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report = sweep_report(str(config.hydra.sweep.dir))
        if report:
            log.info("sweep report: %s", report["paths"]["markdown"])
            print(report["table"])  # the CLI's final output (once), like the results table of a single run
