"""CPU quality study: M2-BERT recipes against BERT of the same width and depth, on real text, through the real pipeline.

Does M2 match BERT at equal pretraining tokens, and does it use its long convolutions? Every model sees the same
corpus (the real English text in ../shared/data: the C4 sample in C4's JSON layout and WikiText-2 valid+test,
split into train and held-out eval by document), the same tokenizer (the real bert-base-uncased WordPiece
vocabulary), the same data order and masks (one MDS dataset, one seed), the same optimizer family and the same
number of tokens. Recorded per model: the held-out MLM loss curve, the batch where it leaves the unigram plateau,
each implicit filter's energy at lags ≥ 3 relative to init (M2), and the context-use losses (full rows vs
8-token windows vs right context hidden; m2bert.train.context_use). Then the GLUE driver fine-tunes every model
with one recipe (yamls/glue/small.yaml) on the real CoLA, SST-2, MRPC, STS-B and RTE, scored on the full dev
sets with the paper's metric set.

    python bench/quality_study.py --shared ../shared --out bench/results --batches 1000   # the study (hours, 2 cores)
    python bench/quality_study.py --shared ../shared --out /tmp/q --quick                 # plumbing check (minutes)

Pipeline: corpus → m2bert-convert-c4 (pre-tokenised MDS) → a short lr probe (--lr-grid) → m2bert-pretrain of
every model in MODELS → m2bert-glue (glue=small). Runs go two at a time (``--parallel``), one thread each.
Stages resume: finished runs are reused from --work, and a pretraining run killed midway continues from its
last checkpoint (autoresume). Writes quality_study.{json,md,png} into --out.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import logging
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from m2bert.machine import cpu_name
from m2bert.atomic import atomic_write_json
from m2bert.data.held_out import HELD_OUT_EVERY, is_held_out
from m2bert.paths import shared_dir

log = logging.getLogger("bench.quality_study")

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
# name → (Hydra model group, preset, recipe: the overrides that make it). ``m2`` is the recommended M2 recipe,
# ``bert`` the baseline; the other recipes sit beside them.
MODELS: dict[str, tuple[str, str, list[str]]] = {
    "m2": ("m2_bert_small", "m2-bert-small", ["filters=keep"]),
    "m2_original": ("m2_bert_small", "m2-bert-small", ["filters=original"]),
    "bert": ("bert_small", "bert-small", []),
}
LABELS = {"m2": "M2 (recommended)", "m2_original": "M2 (original recipe)", "m2_weak": "M2 (weak decay, 600 ba)",
          "bert": "BERT"}
EVAL_EVERY = HELD_OUT_EVERY  # documents: one in twenty (by content hash) is held out for evaluation
SEQ_LEN = 128

# WikiText-2 is stored tokenised (" , ", " @-@ ", "<unk>"); undo the spacing so the text reads like C4's.
_WIKI_DETOK = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" . ", ". "), (" ; ", "; "),
               (" : ", ": "), (" 's", "'s"), (" n't", "n't"), ("( ", "("), (" )", ")"), ("<unk>", "[UNK]")]


# ----------------------------------------------------------------------------- corpus
def wikitext_articles(path: Path) -> list[str]:
    """Articles of a WikiText file: a top-level heading ``= Title =`` starts one; sub-headings stay as lines."""
    articles: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s:
            continue
        if re.fullmatch(r"= [^=].* =", s):
            articles.append([s.strip("= ").strip()])
            continue
        if not articles:
            continue
        s = re.sub(r"^(= )+(.*?)( =)+$", r"\2", s)  # "= = Section = =" → "Section"
        for a, b in _WIKI_DETOK:
            s = s.replace(a, b)
        articles[-1].append(s)
    return ["\n".join(a) for a in articles if len(a) > 1]


def c4_documents(folder: Path) -> list[str]:
    docs = []
    for f in sorted(folder.iterdir()):
        if f.name.endswith((".jsonl", ".json.gz", ".json")):
            opener: Any = gzip.open if f.name.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8") as fh:
                docs += [json.loads(line)["text"] for line in fh if line.strip()]
    return docs


def build_corpus(shared: Path, out: Path, limit: int | None) -> dict[str, Any]:
    """C4-layout JSON lines (train / validation files) from ../shared's real text; deterministic."""
    data = shared / "data"
    docs = [("c4", d) for d in c4_documents(data / "c4")]
    for name in ("valid.txt", "test.txt"):
        docs += [("wikitext-2", a) for a in wikitext_articles(data / "wikitext" / "wikitext-2" / name)]
    if limit is not None:
        docs = docs[:limit] + [d for d in docs if d[0] == "wikitext-2"][:max(limit // 10, 2)]
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": {"documents": 0, "words": 0}, "validation": {"documents": 0, "words": 0}}
    files = {s: open(out / f"c4-{s}.00000-of-00001.json.partial", "w", encoding="utf-8") for s in counts}
    for source, text in docs:
        split = "validation" if is_held_out(text, EVAL_EVERY) else "train"
        files[split].write(json.dumps({"text": text, "source": source}) + "\n")
        counts[split]["documents"] += 1
        counts[split]["words"] += len(text.split())
    for split, fh in files.items():
        fh.close()
        os.replace(out / f"c4-{split}.00000-of-00001.json.partial", out / f"c4-{split}.00000-of-00001.json")
    return counts


def prepare_corpus(shared: Path, work: Path, quick: bool) -> tuple[Path, dict[str, Any]]:
    """The corpus (C4-layout JSON lines) and its MDS shards (rows of 128 bert-base-uncased tokens) in ``work``,
    reused when present; returns (the MDS folder, the corpus counts)."""
    from m2bert.data.convert_c4 import convert

    if not (work / "corpus_counts.json").exists():
        counts = build_corpus(shared, work / "corpus", limit=40 if quick else None)
        atomic_write_json(str(work / "corpus_counts.json"), counts)
    mds = work / "mds"
    if not all((mds / s / "index.json").exists() for s in ("train", "val")):
        convert(str(work / "corpus"), str(mds), splits=("train", "val"),
                tokenizer=str(shared / "data" / "bert-base-uncased" / "vocab.txt"), concat_tokens=SEQ_LEN,
                force=True, progress=False)
    return mds, json.loads((work / "corpus_counts.json").read_text())


# ----------------------------------------------------------------------------- plateau and context
def unigram_plateau(work: Path, vocab: Path) -> dict[str, float]:
    """Cross-entropy and accuracy on the held-out documents' tokens of the best context-free guess: the training
    documents' token frequencies (add-½ smoothed), over the tokens masking can pick (special tokens never are).
    A model whose held-out MLM loss is below it uses context; cached in ``work``."""
    import collections
    import math

    from m2bert.data.tokenizer import load_tokenizer

    cached = work / "unigram.json"
    if cached.exists():
        return json.loads(cached.read_text())
    tokenizer = load_tokenizer(str(vocab))
    special = set(tokenizer.all_special_ids)

    def counts(split: str) -> collections.Counter:
        c: collections.Counter = collections.Counter()
        for line in (work / "corpus" / f"c4-{split}.00000-of-00001.json").read_text(encoding="utf-8").splitlines():
            ids = tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
            c.update(t for t in ids if t not in special)
        return c

    train, val = counts("train"), counts("validation")
    total, size, n_val = sum(train.values()), len(tokenizer), sum(val.values())
    ce = -sum(n * math.log((train[t] + 0.5) / (total + 0.5 * size)) for t, n in val.items()) / n_val
    out = {"loss": round(ce, 4), "accuracy": round(val[train.most_common(1)[0][0]] / n_val, 4)}
    atomic_write_json(str(cached), out)
    return out


def escape_batch(evals: list[dict[str, Any]], plateau: dict[str, float]) -> int | None:
    """The first evaluation whose held-out loss is below the unigram plateau's: the model predicts masked tokens
    better than any guess from token frequencies alone, i.e. it uses context."""
    return next((r["batch"] for r in evals if r["loss"] < plateau["loss"]), None)


# ----------------------------------------------------------------------------- stages
def pretrain(name: str, model: str, args: argparse.Namespace, mds: Path, vocab: Path, root: Path, batches: int,
             lr: float, context_rows: int) -> dict[str, Any]:
    """Pretraining run ``root/name`` of MODELS[model]; a finished run is reused, a killed one resumed."""
    from m2bert.cli import compose
    from m2bert.pretrain import run

    run_dir = root / name
    if (run_dir / "summary.json").exists() and (run_dir / "hf" / "config.json").exists():
        log.info("pretraining %s: reusing %s", name, run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        return {**summary, "run_dir": str(run_dir), "hf_export": str(run_dir / "hf")}  # where it is now
    group, _, recipe = MODELS[model]
    every = max(batches // args.evals, 1)
    overrides = recipe + [
        f"model={group}", "data=c4", f"data.local={mds}", f"data.tokenizer={vocab}", "data.num_workers=0",
        f"global_train_batch_size={args.batch_size}", f"impl.device_train_microbatch_size={args.batch_size}",
        "device_eval_batch_size=64", f"max_duration={batches}ba", f"eval_interval={every}ba", "eval_at_start=true",
        f"optimizer.lr={lr}", f"scheduler.t_warmup={args.warmup}", f"save_interval={every}ba", "autoresume=true",
        f"console_log_interval={every}ba", f"run_root={root}", f"run_name={name}", f"seed={args.seed}",
        f"device={args.device}",
        f"context_eval_rows={context_rows}",
    ] + (["eval_subset_num_batches=1"] if args.quick else [])
    t0 = time.perf_counter()
    summary = run(compose("pretrain", overrides))
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    summary["recipe"] = recipe + [f"optimizer.lr={lr}"]
    atomic_write_json(str(run_dir / "summary.json"), summary)
    return summary


def finetune(name: str, args: argparse.Namespace, hf_dir: str, work: Path) -> dict[str, Any]:
    from m2bert.cli import compose
    from m2bert.glue.driver import run

    run_dir = work / "glue" / name
    overrides = [
        "glue=small", f"start.path={hf_dir}", "start.kind=hf", f"data.source={args.shared / 'data' / 'glue'}",
        f"tasks=[{','.join(TASKS)}]", "chain.enabled=false", "data.pad_to_max_length=false", "save_final=none",
        f"run_root={work / 'glue'}", f"run_name={name}", f"device={args.device}", "console_log_interval=200ba",
    ]
    if run_dir.exists():  # the driver reuses a finished job only if it started from these very weights
        log.info("GLUE %s: resuming %s", name, run_dir)
        overrides.append("resume=true")
    if args.quick:  # one seed, one batch, a slice of each dev set
        overrides += ["train_subset=16", "eval_subset=32", "max_duration=1ba"]
        overrides += [f"glue.{t}.{k}={v}" for t in TASKS for k, v in (("seeds", "[19]"), ("train_subset", 16))]
    return run(compose("glue", overrides))


def _limit_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def side_by_side(stage: Any, workers: int, calls: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """Run ``stage(*call)`` for every call, ``workers`` processes at a time, one thread each."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=context, initializer=_limit_threads,
                             initargs=(1,)) as pool:
        futures = {call[0]: pool.submit(stage, *call) for call in calls}
        return {name: future.result() for name, future in futures.items()}


def pretrain_then_finetune(args: argparse.Namespace, copies: dict[str, Path], vocab: Path, work: Path,
                           lrs: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pretrain every model, then fine-tune it on GLUE as soon as its own pretraining ends (no waiting for the
    slowest model), ``--parallel`` processes at a time, one thread each."""
    context = multiprocessing.get_context("spawn")
    summaries: dict[str, Any] = {}
    glue: dict[str, Any] = {}
    with ProcessPoolExecutor(min(args.parallel, len(args.models)), mp_context=context, initializer=_limit_threads,
                             initargs=(1,)) as pool:
        pending = {pool.submit(pretrain, n, n, args, copies[n], vocab, work / "pretrain", args.batches, lrs[n],
                               args.context_rows): ("pretrain", n) for n in args.models}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                stage, name = pending.pop(future)
                if stage == "pretrain":
                    summaries[name] = future.result()
                    if args.pretrain_only:
                        continue
                    pending[pool.submit(finetune, name, args, summaries[name]["hf_export"], work)] = ("glue", name)
                else:
                    glue[name] = future.result()
    return summaries, glue


def lr_probe(args: argparse.Namespace, mds: dict[str, Path], vocab: Path, work: Path) -> dict[str, Any]:
    """Each probed model at each lr of ``--lr-grid`` for ``--lr-probe-batches``; the lowest final held-out loss
    picks its lr. Models not probed keep ``--lr``."""
    calls = [(f"{name}_lr{lr:g}", name, args, mds[name], vocab, work / "lr_probe", args.lr_probe_batches, lr, 0)
             for name in args.lr_probe for lr in args.lr_grid]
    runs = side_by_side(pretrain, args.parallel, calls)
    out: dict[str, Any] = {"batches": args.lr_probe_batches, "grid": args.lr_grid, "final_loss": {}, "chosen": {}}
    for name in args.lr_probe:
        losses = {f"{lr:g}": runs[f"{name}_lr{lr:g}"]["eval"][-1]["loss"] for lr in args.lr_grid}
        out["final_loss"][name] = {k: round(v, 4) for k, v in losses.items()}
        out["chosen"][name] = float(min(losses, key=losses.get))
    return out


# ----------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def model_entry(name: str, summary: dict[str, Any], glue: dict[str, Any], batch_size: int,
                plateau: dict[str, float]) -> dict[str, Any]:
    from transformers import AutoModelForMaskedLM

    import m2bert  # noqa: F401 - registers the M2 Auto classes

    model = AutoModelForMaskedLM.from_pretrained(summary["hf_export"])
    parameters = sum(p.numel() for p in model.parameters())  # tied decoder weights counted once
    curve = [{"batch": r["batch"], "tokens": r["batch"] * batch_size * SEQ_LEN, "seconds": r["seconds"],
              "loss": round(r["loss"], 4), "accuracy": r["accuracy"]} for r in summary["eval"]]
    train_seconds = curve[-1]["seconds"]
    tokens = summary["batches"] * batch_size * SEQ_LEN
    energy = [{"batch": r["batch"], **{k: round(v, 6) for k, v in r["energy_relative"].items() if v is not None}}
              for r in summary.get("filter_energy", [])]
    final = {k: v for k, v in energy[-1].items() if k != "batch"} if energy else {}
    context = summary.get("context_use") or {}
    return {
        "preset": MODELS[name][1],
        "recipe": summary.get("recipe", []),
        "parameters": parameters,
        "pretrain_tokens": tokens,
        "pretrain_seconds": train_seconds,
        "pretrain_wall_seconds": summary.get("wall_seconds"),
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds else None,
        "final_mlm_loss": curve[-1]["loss"],
        "plateau_escape_batch": escape_batch(summary["eval"], plateau),
        "loss_curve": curve,
        "filter_energy_curve": energy,
        "filter_energy_final": min(final.values()) if final else None,
        "filter_energy_final_per_filter": final,
        "filter_freq_final": summary["filter_energy"][-1]["freq"] if summary.get("filter_energy") else {},
        "context_use": context,
        "context_gain": {"window": context.get("gain_window"), "right": context.get("gain_right")},
        "glue": {t: round(glue["tasks"][t]["score"]["mean"], 2) for t in TASKS if t in glue["tasks"]},
        "glue_std": {t: round(glue["tasks"][t]["score"]["std"], 2) for t in TASKS if t in glue["tasks"]},
        "glue_seeds": {t: glue["tasks"][t]["seeds"] for t in TASKS if t in glue["tasks"]},
        "glue_metrics": {t: {m: round(s["mean"], 2) for m, s in glue["tasks"][t]["metrics"].items()}
                         for t in TASKS if t in glue["tasks"]},
        "glue_average": round(glue["glue_average"], 2) if glue["glue_average"] is not None else None,
        # summed over its jobs: a resumed GLUE run's own time_s counts only what that invocation ran
        "finetune_seconds": round(sum(job.get("time_s", 0.0) for job in glue.get("jobs", [])), 1),
    }


def goal(models: dict[str, Any]) -> dict[str, Any]:
    """The issue's bar for the recommended M2 against BERT (every check named, each true or false)."""
    m2, bert = models["m2"], models["bert"]

    def share(key: str) -> float | None:
        a, b = m2["context_gain"].get(key), bert["context_gain"].get(key)
        return round(a / b, 3) if a is not None and b else None

    checks = {
        "parameters_at_most_bert": m2["parameters"] <= bert["parameters"],
        "glue_average_within_1_point": (m2["glue_average"] is not None and bert["glue_average"] is not None
                                        and m2["glue_average"] >= bert["glue_average"] - 1.0),
        "sst2_above_60_both": all((m["glue"].get("sst2") or 0) > 60 for m in (m2, bert)),
        "leaves_plateau_no_later_than_bert": (m2["plateau_escape_batch"] is not None and (
            bert["plateau_escape_batch"] is None or m2["plateau_escape_batch"] <= bert["plateau_escape_batch"])),
        "filters_above_10pct_of_init": m2["filter_energy_final"] is not None and m2["filter_energy_final"] > 0.1,
        "context_gain_window_at_least_80pct_of_bert": (share("window") or 0) >= 0.8,
        "context_gain_right_at_least_80pct_of_bert": (share("right") or 0) >= 0.8,
    }
    return {"checks": checks, "met": all(checks.values()), "context_gain_share_of_bert":
            {"window": share("window"), "right": share("right")}}


NAMES = {"cola": "CoLA (Matthews)", "sst2": "SST-2 (accuracy)", "mrpc": "MRPC (F1)", "stsb": "STS-B (Spearman)",
         "rte": "RTE (accuracy)"}


def markdown(result: dict[str, Any]) -> str:
    from m2bert.glue.results import fmt

    models = result["models"]
    keys = list(models)

    def cell(v: Any, digits: int = 1) -> str:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return "–" if v is None else str(v)
        return f"{v:,}" if isinstance(v, int) else fmt(v, digits)

    def row(label: str, values: list[Any], digits: int = 1) -> str:
        return f"| {label} | " + " | ".join(cell(v, digits) for v in values) + " |"

    get = lambda field: [models[k].get(field) for k in keys]  # noqa: E731
    lines = [
        "# Quality study: M2-BERT recipes vs BERT at the same width, depth, data and tokens (CPU)", "",
        f"Date: {result['date']} · machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"torch {result['machine']['torch']} · {'QUICK MODE (plumbing only; numbers meaningless)' if result['quick'] else ''}",
        "", f"Command: `{result['command']}`", "",
        f"Budget: {result['budget']['pretrain_batches']} pretraining batches of {result['budget']['batch_size']}×{SEQ_LEN} "
        f"tokens per model; whole study {fmt(result['budget']['study_seconds'] / 60)} min wall-clock"
        + (" (this invocation; earlier stages reused from --work)" if result["budget"].get("resumed") else "")
        + "; per model, pretraining / GLUE wall-clock (min): "
        + ", ".join(f"{k} {fmt((m.get('pretrain_wall_seconds') or 0) / 60)} / {fmt((m.get('finetune_seconds') or 0) / 60)}"
                    for k, m in models.items()) + ".",
        "", "| | " + " | ".join(LABELS.get(k, k) for k in keys) + " |", "|---|" + "---:|" * len(keys),
        row("preset", get("preset")),
        "| recipe | " + " | ".join("<br>".join(f"`{r}`" for r in models[k].get("recipe", [])) or "–" for k in keys) + " |",
        row("parameters", get("parameters")),
        row("pretraining tokens", get("pretrain_tokens")),
        row("held-out MLM loss (15% masking)", get("final_mlm_loss"), 3),
        row("left the unigram plateau at batch", get("plateau_escape_batch")),
        row("smallest filter energy at lags ≥ 3 / init", get("filter_energy_final"), 3),
        row("context gain beyond 8 tokens (nats)", [models[k]["context_gain"].get("window") for k in keys], 3),
        row("context gain from the right (nats)", [models[k]["context_gain"].get("right") for k in keys], 3),
    ]
    for t in TASKS:
        lines.append(row(f"{NAMES[t]}, {len(models[keys[0]]['glue_seeds'].get(t, []))} seed(s)",
                         [models[k]["glue"].get(t) for k in keys]))
    lines.append(row("**average of the 5 tasks**", get("glue_average")))
    plateau = result["unigram_plateau"]
    lines += ["", f"Unigram plateau (held-out loss of predicting every masked token from training-set token "
              f"frequencies alone): {plateau['loss']}; a model has left it at its first evaluation below that. "
              "Filter energy: each implicit filter's Σk² at lags ≥ 3 (beyond the 3-tap short convolution) "
              "relative to its value at init, the smallest over the filters that started non-zero. Context gains: "
              "held-out loss on the same masked tokens with 8-token windows, or with the right context hidden, minus "
              f"the loss with full rows ({result.get('context_rows')} rows).", ""]
    g = result.get("goal")
    if g:
        lines += ["Goal (recommended M2 vs BERT): " + ("**met**" if g["met"] else "**not met**") + "; "
                  + ", ".join(f"{k.replace('_', ' ')}: {'yes' if v else 'no'}" for k, v in g["checks"].items())
                  + f"; context gain as a share of BERT's: {g['context_gain_share_of_bert']}.", ""]
    if result.get("lr_probe"):
        lp = result["lr_probe"]
        lines += [f"Learning rate probe ({lp['batches']} batches each, final held-out loss): "
                  + "; ".join(f"{n}: " + ", ".join(f"{lr} → {v}" for lr, v in losses.items()) + f" (chose {lp['chosen'][n]:g})"
                              for n, losses in lp["final_loss"].items()), ""]
    lines += ["Scores ×100 on the full GLUE dev sets, the paper's metric set (MRPC F1, STS-B Spearman, CoLA "
              "Matthews, others accuracy), mean over seeds; per-seed spread: "
              + "; ".join(f"{NAMES[t]}: " + ", ".join(f"{k} ±{fmt(models[k]['glue_std'].get(t, 0.0), 2)}" for k in keys)
                          for t in TASKS), ""]
    lines += ["Setup:", ""] + [f"- {s}" for s in result["setup"]]
    for k, ref in result.get("reference", {}).items():
        lines += ["", f"Reference row `{k}` ({LABELS.get(k, k)}): from {ref['source']}, {ref['batches']} batches: "
                  f"held-out loss {ref['final_mlm_loss']}, GLUE average {ref['glue_average']}."]
    load = ", ".join(f"{v:.1f}" for v in result.get("load_average_at_end", []))
    lines += ["", f"Seconds: runs went {result['machine'].get('parallel')} at a time, one thread each (load average "
              f"at the end: {load}); for speed compare with bench/train_throughput.py, which alternates steps in one "
              "process."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m2bert.glue.results import grouped_bars

    models = result["models"]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (loss_ax, energy_ax), (context_ax, glue_ax) = axes
    for i, (key, m) in enumerate(models.items()):
        label = f"{LABELS.get(key, key)} ({m['parameters'] / 1e6:.1f}M)"
        curve = m["loss_curve"]
        loss_ax.plot([c["tokens"] / 1e6 for c in curve], [c["loss"] for c in curve], marker="o", ms=3, color=f"C{i}",
                     label=label)
        if m["filter_energy_curve"]:
            energy_ax.semilogy([r["batch"] for r in m["filter_energy_curve"]],
                               [max(min((v for k, v in r.items() if k != "batch"), default=1e-16), 1e-16)
                                for r in m["filter_energy_curve"]], marker="o", ms=3, color=f"C{i}", label=label)
    loss_ax.axhline(result["unigram_plateau"]["loss"], color="grey", ls=":", label="unigram plateau")
    loss_ax.set(xlabel="pretraining tokens (millions)", ylabel="held-out MLM loss", title="MLM loss vs tokens")
    energy_ax.axhline(0.1, color="grey", ls=":", label="10% of init")
    energy_ax.set(xlabel="batch", ylabel="smallest filter energy at lags ≥ 3 / init",
                  title="Implicit filters: are the long convolutions still long?")
    keys = list(models)
    context_ax.bar([i - 0.2 for i in range(len(keys))], [models[k]["context_gain"].get("window") or 0 for k in keys],
                   0.4, label="beyond 8 tokens")
    context_ax.bar([i + 0.2 for i in range(len(keys))], [models[k]["context_gain"].get("right") or 0 for k in keys],
                   0.4, label="from the right")
    context_ax.set_xticks(range(len(keys)), [LABELS.get(k, k) for k in keys])
    context_ax.set(ylabel="held-out loss without − with (nats)", title="Context use after pretraining")
    groups = [t.upper().replace("SST2", "SST-2").replace("STSB", "STS-B") for t in TASKS] + ["avg"]
    grouped_bars(glue_ax, groups, [(LABELS.get(k, k), [m["glue"].get(t) for t in TASKS] + [m["glue_average"]],
                                    [m["glue_std"].get(t, 0.0) for t in TASKS] + [0.0]) for k, m in models.items()])
    glue_ax.set(ylabel="GLUE dev score ×100 (paper's metrics)", title="GLUE dev: CoLA, SST-2, MRPC, STS-B, RTE")
    for ax in (loss_ax, energy_ax, context_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"M2-BERT recipes vs BERT, {result['budget']['pretrain_batches']} batches of 16×128 "
                 f"({result['machine']['cpu']}, {result['date'][:10]}{', QUICK MODE' if result['quick'] else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shared", type=Path, default=shared_dir(), help="the read-only data folder (../shared)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="where quality_study.{json,md,png} go")
    p.add_argument("--work", type=Path, default=None, help="working folder (default runs/quality_study, or --out/work "
                   "with --quick); finished stages found there are reused")
    p.add_argument("--quick", action="store_true", help="a few batches and rows: checks the plumbing, not quality")
    p.add_argument("--batches", type=int, default=1000, help="pretraining batches per model")
    p.add_argument("--batch-size", type=int, default=16, help="pretraining sequences per batch (of 128 tokens)")
    p.add_argument("--evals", type=int, default=10, help="held-out evaluations during pretraining (and one at start)")
    p.add_argument("--lr", type=float, default=1e-3, help="pretraining learning rate of models not in --lr-probe")
    p.add_argument("--lr-grid", type=float, nargs="*", default=[5e-4, 1e-3, 2e-3], help="learning rates to probe")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="the models to run (a report needs all)")
    p.add_argument("--pretrain-only", action="store_true", help="stop after pretraining (no GLUE, no report)")
    p.add_argument("--lr-probe", nargs="*", default=["bert", "m2"], help="models whose lr the probe picks")
    p.add_argument("--lr-probe-batches", type=int, default=150)
    p.add_argument("--warmup", default="0.1dur", help="pretraining warm-up (a Composer time string)")
    p.add_argument("--context-rows", type=int, default=256, help="held-out rows for the context-use losses")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="gpu: bf16 autocast (bench/gpu_study.sh)")
    p.add_argument("--reference", type=Path, default=None,
                   help="an earlier quality_study.json whose models.m2 (the weak-decay recipe) is kept as models.m2_weak")
    p.add_argument("--report-only", action="store_true", help="only rewrite the .md and .png from --out's quality_study.json")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier study's results in --out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stem = args.out / "quality_study"
    if args.report_only:
        result = json.loads(stem.with_suffix(".json").read_text())
        stem.with_suffix(".md").write_text(markdown(result))
        plot(result, stem.with_suffix(".png"))
        return 0
    for option in ("models", "lr_probe"):
        unknown = [n for n in getattr(args, option) if n not in MODELS]
        if unknown:
            p.error(f"--{option.replace('_', '-')} names unknown model(s) {unknown}; choose from {list(MODELS)}")
    if set(args.lr_probe) - set(args.models):
        p.error(f"--lr-probe {' '.join(args.lr_probe)} names models outside --models {' '.join(args.models)}")
    if not args.pretrain_only and sorted(args.models) != sorted(MODELS):
        p.error(f"--models {' '.join(args.models)} needs --pretrain-only: the report compares all of {list(MODELS)}")
    if args.quick:
        args.batches, args.batch_size, args.evals, args.context_rows = 2, 8, 1, 4
        args.lr_grid, args.lr_probe_batches = args.lr_grid[:1], 1
    vocab = args.shared / "data" / "bert-base-uncased" / "vocab.txt"
    for needed in (vocab, args.shared / "data" / "c4", args.shared / "data" / "wikitext", args.shared / "data" / "glue"):
        if not needed.exists():
            p.error(f"{needed} is missing: --shared must point at the shared data folder (../shared beside the repo)")
    if stem.with_suffix(".json").exists() and not args.overwrite and not args.pretrain_only:
        p.error(f"{stem.with_suffix('.json')} holds an earlier study: pass another --out, or --overwrite to replace it")
    reference = None
    if args.reference is not None:
        if not args.reference.exists():
            p.error(f"--reference {args.reference} does not exist")
        reference = json.loads(args.reference.read_text())  # read now: --overwrite may replace that very file
    work = args.work or (args.out / "work" if args.quick else Path("runs/quality_study"))
    t0 = time.perf_counter()
    resumed = (work / "pretrain").exists()

    mds, counts = prepare_corpus(args.shared, work, args.quick)
    plateau = unigram_plateau(work, vocab)
    log.info("corpus: %s; unigram plateau %s", counts, plateau)

    copies = {}
    for name in args.models:  # streaming keys its shared memory by the local folder: one copy per concurrent reader
        copies[name] = work / f"mds_{name}"
        if not (copies[name] / "train" / "index.json").exists():
            shutil.copytree(mds, copies[name], dirs_exist_ok=True)
    probe = lr_probe(args, copies, vocab, work) if args.lr_grid and args.lr_probe else None
    lrs = {name: (probe["chosen"].get(name, args.lr) if probe else args.lr) for name in args.models}
    summaries, glue = pretrain_then_finetune(args, copies, vocab, work, lrs)
    if args.pretrain_only:
        log.info("pretrained %s under %s", ", ".join(summaries), work / "pretrain")
        return 0

    models = {name: model_entry(name, summaries[name], glue[name], args.batch_size, plateau) for name in MODELS}
    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/quality_study.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "machine": {**machine(), "threads_per_run": 1, "parallel": args.parallel},
        "load_average_at_end": os.getloadavg(),
        "budget": {"pretrain_batches": args.batches, "batch_size": args.batch_size,
                   "study_seconds": round(time.perf_counter() - t0, 1), "resumed": resumed},
        "corpus": counts,
        "unigram_plateau": plateau,
        "context_rows": args.context_rows,
        "lr_probe": probe,
        "pretrain_recipe": {"lr": lrs, "warmup": args.warmup,
                            "optimizer": "decoupled_adamw (betas 0.9/0.98, eps 1e-6, wd 1e-5), linear decay to 0.02x, "
                                         "gradient clipping at norm 1.0",
                            "mlm_probability": 0.30, "eval_mlm_probability": 0.15, "seed": args.seed},
        "setup": [
            f"corpus: ../shared/data C4 sample (1,030 documents) + WikiText-2 valid/test articles; every {EVAL_EVERY}th "
            "document by content hash held out; concatenated into rows of 128 bert-base-uncased WordPiece tokens",
            "pretraining: m2bert-pretrain, same MDS shards, seed, data order and masks for every model; "
            "MLM 30% masking, decoder on masked positions only; held-out loss at 15% masking",
            "fine-tuning: m2bert-glue glue=small (one recipe for all: AdamW lr 2e-4, wd 0.01, 6% warm-up, linear "
            "decay; 3 epochs (SST-2: 1); two seeds on MRPC, STS-B and RTE; fixed train subsets: SST-2 10,000 "
            "rows, MRPC and STS-B 2,000, RTE 1,500); batches padded to their longest row (the models are "
            "padding-invariant); no MNLI chain (MNLI is not in ../shared); full dev sets",
        ],
        "models": models,
        "goal": goal(models),
    }
    if reference is not None and "m2" in reference.get("models", {}):
        old = reference["models"]["m2"]
        result["reference"] = {"m2_weak": {"source": f"{args.reference} ({reference['date']})",
                                           "batches": reference["budget"]["pretrain_batches"],
                                           "recipe": ["optimizer.filter_decay=weak"], **old}}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(str(stem.with_suffix(".json")), result)
    stem.with_suffix(".md").write_text(markdown(result))
    plot(result, stem.with_suffix(".png"))
    print(markdown(result))  # the command's report
    return 0


if __name__ == "__main__":
    sys.exit(main())
