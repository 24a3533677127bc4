"""Each model of the quality study at its best fine-tuning lr per task, beside the shared-lr result.

Reads ``bench/results/quality_study.json`` (every task at glue=small's lr, 2e-4) and the sweep reports of
``bench/glue_lr_check.sh`` (``bench/results/quality_glue_lr/<model>_<tasks>.json``), takes per model and task the
lr with the best dev score (as GLUE results are reported: dev selects the setting) and writes
``bench/results/quality_glue_lr/best.{json,md}`` with both averages and the study's goal (within 1 point of BERT).

    python bench/glue_best_lr.py
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from m2bert.atomic import atomic_write_json

SHARED_LR = 2e-4  # yamls/glue/small.yaml, every task


def best_per_task(study: dict, sweeps: Path, model: str) -> dict[str, dict]:
    """task → {lr → score} from the study (shared lr) and every sweep report of ``model``."""
    scores: dict[str, dict[float, float]] = {t: {SHARED_LR: s} for t, s in study["models"][model]["glue"].items()}
    for path in sorted(sweeps.glob(f"{model}_*.json")):
        for row in json.loads(path.read_text())["rows"]:
            found = re.search(rf"glue\.{row['task']}\.lr=([0-9.eE+-]+)", row["setting"])
            lr = float(found.group(1)) if found else SHARED_LR
            scores.setdefault(row["task"], {})[lr] = round(row["mean"], 2)
    return {t: {"scores": {f"{lr:g}": s for lr, s in sorted(by_lr.items())},
                "best_lr": max(by_lr, key=by_lr.get), "best": max(by_lr.values())} for t, by_lr in scores.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--study", type=Path, default=Path("bench/results/quality_study.json"),
                   help="the quality study's JSON (every task at the shared lr)")
    p.add_argument("--sweeps", type=Path, default=Path("bench/results/quality_glue_lr"),
                   help="bench/glue_lr_check.sh's reports (<model>_<tasks>.json); best.{json,md} go here too")
    args = p.parse_args(argv)
    study = json.loads(args.study.read_text())
    models = {m: best_per_task(study, args.sweeps, m) for m in ("m2", "bert")}
    tasks = list(study["models"]["m2"]["glue"])
    average = {m: round(sum(r[t]["best"] for t in tasks) / len(tasks), 2) for m, r in models.items()}
    shared = {m: study["models"][m]["glue_average"] for m in models}
    result = {"study": str(args.study), "study_date": study["date"], "tasks": tasks, "per_task": models,
              "average_best_lr": average, "average_shared_lr": shared,
              "within_1_point_best_lr": average["m2"] >= average["bert"] - 1.0,
              "within_1_point_shared_lr": shared["m2"] >= shared["bert"] - 1.0}
    atomic_write_json(str(args.sweeps / "best.json"), result)
    lines = ["# GLUE dev at each model's best fine-tuning lr (quality study's pretrained M2 `filters=keep` and BERT)", "",
             f"Study: `{args.study}` ({study['date']}); sweeps: `{args.sweeps}/<model>_<tasks>.json` "
             "(`bench/glue_lr_check.sh`); dev selects the lr, as GLUE results are reported.", "",
             "| task | M2: score per lr | M2 best | BERT: score per lr | BERT best |", "|---|---|---:|---|---:|"]
    for t in tasks:
        cells = [", ".join(f"{lr}: {s}" for lr, s in models[m][t]["scores"].items()) for m in ("m2", "bert")]
        lines.append(f"| {t} | {cells[0]} | {models['m2'][t]['best']} | {cells[1]} | {models['bert'][t]['best']} |")
    lines += [f"| **average** | shared lr 2e-4: {shared['m2']} | **{average['m2']}** | shared lr 2e-4: {shared['bert']} "
              f"| **{average['bert']}** |", "",
              f"M2 within 1 point of BERT: at each model's best lr {'yes' if result['within_1_point_best_lr'] else 'no'} "
              f"({average['m2'] - average['bert']:+.2f}); at the shared lr "
              f"{'yes' if result['within_1_point_shared_lr'] else 'no'} ({shared['m2'] - shared['bert']:+.2f})."]
    (args.sweeps / "best.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
