"""CPU quality study: M2-BERT against BERT of the same width and depth, on real text, through the real pipeline.

Does M2 match BERT at equal pretraining tokens? Both models see the same corpus (the real English text in
../shared/data: the C4 sample in C4's JSON layout and WikiText-2 valid+test, split into train and held-out
eval by document), the same tokenizer (the real bert-base-uncased WordPiece vocabulary), the same data order
and masks (one MDS dataset, one seed), the same optimizer family and the same number of tokens. Then the GLUE
driver fine-tunes both with one recipe (yamls/glue/small.yaml) on the real CoLA, SST-2, MRPC, STS-B and RTE,
scored on the full dev sets with the paper's metric set.

    python bench/quality_study.py --shared ../shared --out bench/results           # the study (~90 min, 2 cores)
    python bench/quality_study.py --shared ../shared --out /tmp/q --quick          # plumbing check (< 1 min)

Pipeline: corpus → m2bert-convert-c4 (pre-tokenised MDS) → m2bert-pretrain (model=m2_bert_small and
model=bert_small) → m2bert-glue (glue=small). Each stage runs the two models side by side, one process each with
half the cores. Finished stages are reused from --work when rerun. Writes quality_study.{json,md,png} into --out.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from m2bert.atomic import atomic_write_json
from m2bert.paths import shared_dir

log = logging.getLogger("bench.quality_study")

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
MODELS = {"m2": ("m2_bert_small", "m2-bert-small"), "bert": ("bert_small", "bert-small")}
EVAL_EVERY = 20  # documents: one in twenty (by content hash) is held out for evaluation
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
        held_out = int(hashlib.sha1(text.encode()).hexdigest(), 16) % EVAL_EVERY == 0
        split = "validation" if held_out else "train"
        files[split].write(json.dumps({"text": text, "source": source}) + "\n")
        counts[split]["documents"] += 1
        counts[split]["words"] += len(text.split())
    for split, fh in files.items():
        fh.close()
        os.replace(out / f"c4-{split}.00000-of-00001.json.partial", out / f"c4-{split}.00000-of-00001.json")
    return counts


# ----------------------------------------------------------------------------- stages
def set_aside(path: Path) -> None:
    """An unfinished stage's folder is renamed, never deleted (nothing is lost; the rerun starts clean)."""
    if path.exists():
        aside = path.with_name(f"{path.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("%s is incomplete; moved to %s", path, aside)
        path.rename(aside)


def pretrain(name: str, args: argparse.Namespace, mds: Path, vocab: Path, work: Path) -> dict[str, Any]:
    from m2bert.cli import compose
    from m2bert.pretrain import run

    run_dir = work / "pretrain" / name
    if (run_dir / "summary.json").exists() and (run_dir / "hf" / "config.json").exists():
        log.info("pretraining %s: reusing %s", name, run_dir)
        return json.loads((run_dir / "summary.json").read_text())
    set_aside(run_dir)
    group, _ = MODELS[name]
    lr = args.lr_m2 if name == "m2" else args.lr_bert
    overrides = [
        f"model={group}", "data=c4", f"data.local={mds}", f"data.tokenizer={vocab}", "data.num_workers=0",
        f"global_train_batch_size={args.batch_size}", f"impl.device_train_microbatch_size={args.batch_size}",
        "device_eval_batch_size=64", f"max_duration={args.batches}ba",
        f"eval_interval={max(args.batches // args.evals, 1)}ba", "eval_at_start=true",
        f"optimizer.lr={lr}", f"scheduler.t_warmup={args.warmup}", f"save_interval={args.batches}ba",
        f"console_log_interval={max(args.batches // 10, 1)}ba", f"run_root={work / 'pretrain'}", f"run_name={name}",
        f"seed={args.seed}", "device=cpu",
    ] + (["eval_subset_num_batches=1"] if args.quick else [])
    cfg = compose("pretrain", overrides)
    t0 = time.perf_counter()
    summary = run(cfg)
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(str(run_dir / "summary.json"), summary)
    return summary


def finetune(name: str, args: argparse.Namespace, hf_dir: str, work: Path) -> dict[str, Any]:
    from m2bert.cli import compose
    from m2bert.glue.driver import run

    run_dir = work / "glue" / name
    if (run_dir / "results.json").exists():
        log.info("GLUE %s: reusing %s", name, run_dir)
        return json.loads((run_dir / "results.json").read_text())
    set_aside(run_dir)
    overrides = [
        "glue=small", f"start.path={hf_dir}", "start.kind=hf", f"data.source={args.shared / 'data' / 'glue'}",
        f"tasks=[{','.join(TASKS)}]", "chain.enabled=false", "data.pad_to_max_length=false", "save_final=none",
        f"run_root={work / 'glue'}", f"run_name={name}", "device=cpu", "console_log_interval=200ba",
    ]
    if args.quick:  # one seed, one batch, a slice of each dev set
        overrides += ["train_subset=16", "eval_subset=32", "max_duration=1ba"]
        overrides += [f"glue.{t}.{k}={v}" for t in TASKS for k, v in (("seeds", "[19]"), ("train_subset", 16))]
    return run(compose("glue", overrides))


def _limit_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def side_by_side(stage: Any, threads: int, calls: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """Run ``stage(*call)`` for every model at the same time, each in its own process with ``threads`` threads."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(calls), mp_context=context, initializer=_limit_threads, initargs=(threads,)) as pool:
        futures = {call[0]: pool.submit(stage, *call) for call in calls}
        return {name: future.result() for name, future in futures.items()}


# ----------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def model_entry(name: str, summary: dict[str, Any], glue: dict[str, Any], batch_size: int) -> dict[str, Any]:
    from transformers import AutoModelForMaskedLM

    import m2bert  # noqa: F401 - registers the M2 Auto classes

    model = AutoModelForMaskedLM.from_pretrained(summary["hf_export"])
    parameters = sum(p.numel() for p in model.parameters())  # tied decoder weights counted once
    curve = [{"batch": r["batch"], "tokens": r["batch"] * batch_size * SEQ_LEN, "seconds": r["seconds"],
              "loss": round(r["loss"], 4), "accuracy": r["accuracy"]} for r in summary["eval"]]
    train_seconds = curve[-1]["seconds"]
    tokens = summary["batches"] * batch_size * SEQ_LEN
    return {
        "preset": MODELS[name][1],
        "parameters": parameters,
        "pretrain_tokens": tokens,
        "pretrain_seconds": train_seconds,
        "pretrain_wall_seconds": summary.get("wall_seconds"),
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds else None,
        "final_mlm_loss": curve[-1]["loss"],
        "loss_curve": curve,
        "glue": {t: round(glue["tasks"][t]["score"]["mean"], 2) for t in TASKS if t in glue["tasks"]},
        "glue_std": {t: round(glue["tasks"][t]["score"]["std"], 2) for t in TASKS if t in glue["tasks"]},
        "glue_seeds": {t: glue["tasks"][t]["seeds"] for t in TASKS if t in glue["tasks"]},
        "glue_metrics": {t: {m: round(s["mean"], 2) for m, s in glue["tasks"][t]["metrics"].items()}
                         for t in TASKS if t in glue["tasks"]},
        "glue_average": round(glue["glue_average"], 2) if glue["glue_average"] is not None else None,
        "finetune_seconds": glue.get("time_s"),
    }


def markdown(result: dict[str, Any]) -> str:
    from m2bert.glue.results import fmt

    m2, bert = result["models"]["m2"], result["models"]["bert"]

    def row(label: str, a: Any, b: Any, delta: bool = True, digits: int = 1) -> str:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            d = (f"{a - b:,}" if isinstance(a - b, int) else fmt(a - b, digits)) if delta else ""
            a_s = f"{a:,}" if isinstance(a, int) else fmt(a, digits)
            b_s = f"{b:,}" if isinstance(b, int) else fmt(b, digits)
            return f"| {label} | {a_s} | {b_s} | {d} |"
        return f"| {label} | {a} | {b} | |"

    names = {"cola": "CoLA (Matthews)", "sst2": "SST-2 (accuracy)", "mrpc": "MRPC (F1)", "stsb": "STS-B (Spearman)",
             "rte": "RTE (accuracy)"}
    lines = [
        "# Quality study: M2-BERT vs BERT at the same width, depth, data and tokens (CPU)",
        "",
        f"Date: {result['date']} · machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"torch {result['machine']['torch']} · {'QUICK MODE (plumbing only; numbers meaningless)' if result['quick'] else ''}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Budget: {result['budget']['pretrain_batches']} pretraining batches of {result['budget']['batch_size']}×{SEQ_LEN} "
        f"tokens per model; whole study {fmt(result['budget']['study_seconds'] / 60)} min wall-clock.",
        "",
        "| | M2-BERT | BERT | M2 − BERT |",
        "|---|---:|---:|---:|",
        row("preset", m2["preset"], bert["preset"]),
        row("parameters", m2["parameters"], bert["parameters"]),
        row("pretraining tokens", m2["pretrain_tokens"], bert["pretrain_tokens"], delta=False),
        row("pretraining seconds (training loop)", m2["pretrain_seconds"], bert["pretrain_seconds"]),
        row("pretraining tokens/s", m2["tokens_per_second"], bert["tokens_per_second"]),
        row("held-out MLM loss (15% masking)", m2["final_mlm_loss"], bert["final_mlm_loss"], digits=3),
    ]
    for t in TASKS:
        lines.append(row(f"{names[t]} ±std over {len(m2['glue_seeds'].get(t, []))} seed(s)",
                         m2["glue"].get(t), bert["glue"].get(t)) + "")
    lines.append(row("**average of the 5 tasks**", m2["glue_average"], bert["glue_average"]))
    lines += ["", "Scores ×100 on the full GLUE dev sets, the paper's metric set (MRPC F1, STS-B Spearman, CoLA Matthews, "
              "others accuracy), mean over seeds; per-seed spread:", ""]
    lines += [f"- {names[t]}: M2 ±{fmt(m2['glue_std'].get(t, 0.0), 2)}, BERT ±{fmt(bert['glue_std'].get(t, 0.0), 2)}"
              for t in TASKS]
    load = ", ".join(f"{v:.1f}" for v in result.get("load_average_at_end", []))
    lines += ["", "Setup:", ""] + [f"- {s}" for s in result["setup"]]
    threads = result["machine"].get("threads_per_model")
    lines += ["", f"Seconds and tokens/s: both models ran at the same time, one process each with {threads} thread(s) "
              f"(load average at the end: {load}); for speed at full width compare with bench/train_throughput.py, "
              "which alternates steps in one process."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m2bert.glue.results import grouped_bars

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, m in result["models"].items():
        curve = m["loss_curve"]
        label = f"{'M2-BERT' if key == 'm2' else 'BERT'} ({m['parameters'] / 1e6:.1f}M)"
        axes[0].plot([c["tokens"] / 1e6 for c in curve], [c["loss"] for c in curve], marker="o", ms=3, label=label)
        axes[1].plot([c["seconds"] / 60 for c in curve], [c["loss"] for c in curve], marker="o", ms=3, label=label)
    axes[0].set_xlabel("pretraining tokens (millions)")
    axes[1].set_xlabel("training wall-clock (minutes, this CPU)")
    for ax in axes[:2]:
        ax.set_ylabel("held-out MLM loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    groups = [t.upper().replace("SST2", "SST-2").replace("STSB", "STS-B") for t in TASKS] + ["avg"]
    series = []
    for key, label in (("m2", "M2-BERT"), ("bert", "BERT")):
        m = result["models"][key]
        series.append((label, [m["glue"].get(t) for t in TASKS] + [m["glue_average"]],
                       [m["glue_std"].get(t, 0.0) for t in TASKS] + [0.0]))
    grouped_bars(axes[2], groups, series)
    axes[2].set_ylabel("GLUE dev score ×100 (paper's metrics)")
    axes[2].set_title("GLUE dev: CoLA, SST-2, MRPC, STS-B, RTE")
    axes[0].set_title("MLM loss vs tokens")
    axes[1].set_title("MLM loss vs wall-clock")
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
    p.add_argument("--batches", type=int, default=600, help="pretraining batches per model")
    p.add_argument("--batch-size", type=int, default=16, help="pretraining sequences per batch (of 128 tokens)")
    p.add_argument("--evals", type=int, default=5, help="held-out evaluations during pretraining (and one at start)")
    p.add_argument("--lr-m2", type=float, default=1e-3, help="M2 pretraining learning rate")
    p.add_argument("--lr-bert", type=float, default=1e-3, help="BERT pretraining learning rate")
    p.add_argument("--warmup", default="0.1dur", help="pretraining warm-up (a Composer time string)")
    p.add_argument("--seed", type=int, default=17)
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
    if args.quick:
        args.batches, args.batch_size, args.evals = 2, 8, 1
    vocab = args.shared / "data" / "bert-base-uncased" / "vocab.txt"
    for needed in (vocab, args.shared / "data" / "c4", args.shared / "data" / "wikitext", args.shared / "data" / "glue"):
        if not needed.exists():
            p.error(f"{needed} is missing: --shared must point at the shared data folder (../shared beside the repo)")
    if stem.with_suffix(".json").exists() and not args.overwrite:
        p.error(f"{stem.with_suffix('.json')} holds an earlier study: pass another --out, or --overwrite to replace it")
    work = args.work or (args.out / "work" if args.quick else Path("runs/quality_study"))
    t0 = time.perf_counter()

    from m2bert.data.convert_c4 import convert

    corpus, mds = work / "corpus", work / "mds"
    if not (work / "corpus_counts.json").exists():
        counts = build_corpus(args.shared, corpus, limit=40 if args.quick else None)
        atomic_write_json(str(work / "corpus_counts.json"), counts)
    counts = json.loads((work / "corpus_counts.json").read_text())
    if not all((mds / s / "index.json").exists() for s in ("train", "val")):
        convert(str(corpus), str(mds), splits=("train", "val"), tokenizer=str(vocab), concat_tokens=SEQ_LEN,
                force=True, progress=False)
    log.info("corpus: %s", counts)

    # Side by side: each stage runs both models at once, one process each with half the cores, so both see the
    # same machine at the same time (their seconds compare) and the study uses every core.
    threads = max(1, (os.cpu_count() or 2) // len(MODELS))
    for name in MODELS:  # streaming keys its shared memory by the local folder: one copy per concurrent reader
        if not (work / f"mds_{name}" / "train" / "index.json").exists():
            shutil.copytree(mds, work / f"mds_{name}", dirs_exist_ok=True)
    summaries = side_by_side(pretrain, threads, [(n, args, work / f"mds_{n}", vocab, work) for n in MODELS])
    glue = side_by_side(finetune, threads, [(n, args, summaries[n]["hf_export"], work) for n in MODELS])

    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/quality_study.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "machine": {**machine(), "threads_per_model": threads},
        "load_average_at_end": os.getloadavg(),
        "budget": {"pretrain_batches": args.batches, "batch_size": args.batch_size,
                   "study_seconds": round(time.perf_counter() - t0, 1)},
        "corpus": counts,
        "pretrain_recipe": {"lr": {"m2": args.lr_m2, "bert": args.lr_bert}, "warmup": args.warmup,
                            "optimizer": "decoupled_adamw (betas 0.9/0.98, eps 1e-6, wd 1e-5), linear decay to 0.02x, "
                                         "gradient clipping at norm 1.0",
                            "mlm_probability": 0.30, "eval_mlm_probability": 0.15, "seed": args.seed},
        "setup": [
            f"corpus: ../shared/data C4 sample (1,030 documents) + WikiText-2 valid/test articles; every {EVAL_EVERY}th "
            "document by content hash held out; concatenated into rows of 128 bert-base-uncased WordPiece tokens",
            "pretraining: m2bert-pretrain, same MDS shards, seed, data order and masks for both models; "
            "MLM 30% masking, decoder on masked positions only; held-out loss at 15% masking",
            "fine-tuning: m2bert-glue glue=small (one recipe for both: AdamW lr 2e-4, wd 0.01, 6% warm-up, linear "
            "decay; 2 epochs, SST-2 1; fixed train subsets: SST-2 10,000 rows, MRPC and STS-B 2,000, RTE 1,500); batches "
            "padded to their longest row (both models are padding-invariant); no MNLI chain (MNLI is not in "
            "../shared); full dev sets",
        ],
        "models": {name: model_entry(name, summaries[name], glue[name], args.batch_size) for name in MODELS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(str(stem.with_suffix(".json")), result)
    stem.with_suffix(".md").write_text(markdown(result))
    plot(result, stem.with_suffix(".png"))
    print(markdown(result))  # the command's report
    return 0


if __name__ == "__main__":
    sys.exit(main())
