"""Filter-recipe probes: short pretraining runs of small M2 (and small BERT) on the quality study's corpus.

Which optimizer and init settings let M2 leave the MLM plateau as early as BERT *and* keep its long
convolutions? Each probe is one pretraining run through ``m2bert.pretrain.run`` (one thread), on the study's
corpus and shards (``bench/quality_study.py``: ../shared's C4 sample + WikiText-2, rows of 128
bert-base-uncased tokens), with the issue's probe setup: 16×128 batches, lr 1e-3, constant lr after 60 warm-up
batches, seed 17. Recorded per probe: held-out MLM loss / masked accuracy every 30 batches, each implicit
filter's energy at lags ≥ 3 relative to init (``m2bert.train.callbacks.FilterEnergy``), the context-use losses
(``m2bert.train.context_use``) and the batch where the model leaves the unigram plateau.

    python bench/filter_recipe_probes.py run bert m2_original        # one process per probe, one thread each
    python bench/filter_recipe_probes.py report                     # filter_probes.{json,md,png}
    python bench/filter_recipe_probes.py run m2_weak_res0 --quick --out /tmp/p   # plumbing check (seconds)
    python bench/filter_recipe_probes.py guard    # the test suite's guard run for filters=keep|weak|original
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from m2bert.atomic import atomic_write_json
from m2bert.paths import shared_dir


def _sibling(name: str) -> Any:
    """A module of bench/ (not a package): the quality study's corpus builder and machine facts."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = _sibling("quality_study")

log = logging.getLogger("bench.filter_recipe_probes")

M2 = ["model=m2_bert_small"]
MEANINGFUL_GAIN = 0.02  # nats: below it a context gain is within the noise of 64 held-out rows
# name → (what it tests, overrides). ``original`` and ``weak`` are m2bert.options.FilterDecay.
PROBES: dict[str, tuple[str, list[str]]] = {
    "bert": ("BERT baseline (bert-small)", ["model=bert_small"]),
    "m2_original": ("the original's filter groups and decay", M2 + ["optimizer.filter_decay=original"]),
    "m2_weak": ("weak filter decay (before this study, the default)", M2 + ["optimizer.filter_decay=weak"]),
    "m2_weak_res0": ("weak decay, residual long conv starts at zero",
                     M2 + ["optimizer.filter_decay=weak", "+model.overrides.residual_long_conv_init_scale=0.0"]),
    "m2_weak_res0_lc01": ("weak decay, residual long conv at zero, long conv at 0.1×",
                          M2 + ["optimizer.filter_decay=weak", "+model.overrides.residual_long_conv_init_scale=0.0",
                                "+model.overrides.long_conv_init_scale=0.1"]),
    "m2_weak_all0": ("weak decay, both long convs start at zero",
                     M2 + ["optimizer.filter_decay=weak", "+model.overrides.residual_long_conv_init_scale=0.0",
                           "+model.overrides.long_conv_init_scale=0.0"]),
    "m2_weak_res01": ("weak decay, residual long conv at 0.1×",
                      M2 + ["optimizer.filter_decay=weak", "+model.overrides.residual_long_conv_init_scale=0.1"]),
    "m2_original_res0": ("the original's decay, residual long conv at zero",
                         M2 + ["optimizer.filter_decay=original", "+model.overrides.residual_long_conv_init_scale=0.0"]),
}


# ----------------------------------------------------------------------------- one probe
def run_probe(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from m2bert.cli import compose
    from m2bert.pretrain import run

    torch.set_num_threads(args.threads)
    mds, _ = study.prepare_corpus(args.shared, args.work, args.quick)
    vocab = args.shared / "data" / "bert-base-uncased" / "vocab.txt"
    plateau = study.unigram_plateau(args.work, vocab)
    private = args.work / f"mds_{name}"  # streaming keys shared memory by folder: one copy per concurrent run
    if not (private / "train" / "index.json").exists():
        shutil.copytree(mds, private, dirs_exist_ok=True)
    runs = args.work / "probes"
    if (runs / name).exists():
        aside = runs / f"{name}.earlier-{time.strftime('%Y%m%d-%H%M%S')}"
        (runs / name).rename(aside)  # never deleted: an earlier probe's run stays beside the new one
    what, overrides = PROBES[name]
    every = max(args.batches // 5, 1)
    settings = [
        "data=c4", f"data.local={private}", f"data.tokenizer={vocab}", "data.num_workers=0",
        f"global_train_batch_size={args.batch_size}", f"impl.device_train_microbatch_size={args.batch_size}",
        "device_eval_batch_size=64", f"max_duration={args.batches}ba", f"eval_interval={every}ba",
        "eval_at_start=true", f"optimizer.lr={args.lr}", "scheduler=constant_with_warmup",
        f"scheduler.t_warmup={args.warmup}", f"save_interval={args.batches}ba", "export_hf=false",
        f"console_log_interval={every}ba", f"run_root={runs}", f"run_name={name}", f"seed={args.seed}", "device=cpu",
        f"context_eval_rows={args.context_rows}",
    ] + (["eval_subset_num_batches=1"] if args.quick else [])
    t0 = time.perf_counter()
    summary = run(compose("pretrain", overrides + settings))
    final_energy = summary["filter_energy"][-1]["energy_relative"] if summary["filter_energy"] else {}
    return {
        "name": name, "what": what, "overrides": overrides, "settings": settings,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/filter_recipe_probes.py", *map(shlex.quote, sys.argv[1:])]),
        "machine": {**study.machine(), "threads": args.threads, "load_average_at_end": os.getloadavg()},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "unigram_plateau": plateau,
        "escape_batch": study.escape_batch(summary["eval"], plateau),
        "eval": summary["eval"],
        "filter_energy": summary["filter_energy"],
        "filter_energy_final": final_energy,
        "filter_energy_final_min": min((v for v in final_energy.values() if v is not None), default=None),
        "context_use": summary.get("context_use"),
    }


# The test suite's regression guard (tests/test_filter_recipe.py): m2-bert-tiny on the offline sample (conftest's
# ``sample_mds``), the recommended recipe. Its thresholds come from ``guard`` below (bench/results/filter_guard.*: the
# same run for filters=keep, weak and original), each with a margin; weak (the default before) and original fail them.
GUARD_SETTINGS = {
    "global_train_batch_size": 16, "impl.device_train_microbatch_size": 16, "device_eval_batch_size": 64,
    "eval_subset_num_batches": 4, "max_duration": "150ba", "eval_interval": "150ba", "optimizer.lr": "2e-3",
    "scheduler": "constant_with_warmup", "scheduler.t_warmup": "30ba", "save_interval": "1000ba", "export_hf": "false",
    "console_log_interval": "1000ba", "context_eval_rows": 32, "device": "cpu",
}
GUARD_THRESHOLDS = {"loss_below": 5.86, "filter_energy_min_above": 3.0, "gain_right_above": 0.05}


def guard_run(mds: str, tokenizer: str, run_root: str, filters: str) -> dict[str, float]:
    """One guard run; returns its final held-out loss, smallest relative filter energy and context gains."""
    from m2bert.cli import compose
    from m2bert.pretrain import run

    overrides = ["model=m2_bert_tiny", "data=sample", f"data.local={mds}", f"data.tokenizer={tokenizer}",
                 f"filters={filters}", f"run_root={run_root}", f"run_name=guard_{filters}",
                 *(f"{k}={v}" for k, v in GUARD_SETTINGS.items())]
    summary = run(compose("pretrain", overrides))
    energies = [v for v in summary["filter_energy"][-1]["energy_relative"].values() if v is not None]
    return {"loss": round(summary["eval"][-1]["loss"], 4), "accuracy": round(summary["eval"][-1]["accuracy"], 4),
            "filter_energy_min": round(min(energies), 6), "gain_right": summary["context_use"]["gain_right"],
            "gain_window": summary["context_use"]["gain_window"]}


# ----------------------------------------------------------------------------- report
def report(out: Path) -> dict[str, Any]:
    probes = {p.stem: json.loads(p.read_text()) for p in sorted((out / "filter_probes").glob("*.json"))}
    if not probes:
        raise SystemExit(f"no probe results in {out / 'filter_probes'}: run some first")
    for p in probes.values():
        p["escape_batch"] = study.escape_batch(p["eval"], p["unigram_plateau"])
    bert = probes.get("bert", {}).get("context_use") or {}
    lines = ["# Filter-recipe probes: small M2 vs small BERT, short pretraining runs (CPU)", "",
             "Each row is one committed command, `python bench/filter_recipe_probes.py run NAME` (setup in the "
             "script's docstring); held-out MLM loss / masked accuracy (%) at the listed batches; filter energy = "
             "each implicit filter's Σk² at lags ≥ 3 relative to its value at init (min and max over the filters "
             "that started non-zero); context gains in nats (loss without − loss with): beyond 8 tokens, and "
             "from the right; in brackets, the fraction of BERT's gain, once BERT's exceeds "
             f"{MEANINGFUL_GAIN} nats.", ""]
    plateau = next(iter(probes.values()))["unigram_plateau"]
    lines += [f"Unigram plateau (training-set token frequencies on held-out tokens): loss {plateau['loss']}, "
              f"accuracy {plateau['accuracy'] * 100:.1f}%; a model has left it at the first eval below that loss.", ""]
    batches = sorted({r["batch"] for p in probes.values() for r in p["eval"]})
    lines += ["| probe | what | " + " | ".join(str(b) for b in batches) + " | left plateau at | filter energy "
              "(min–max) | context gain >8 tok | gain from right | date |",
              "|---|---|" + "---|" * len(batches) + "---|---|---|---|---|"]
    for name, p in probes.items():
        by_batch = {r["batch"]: r for r in p["eval"]}
        cells = [f"{by_batch[b]['loss']:.3f}/{by_batch[b]['accuracy'] * 100:.1f}" if b in by_batch else ""
                 for b in batches]
        energies = [v for v in p["filter_energy_final"].values() if v is not None]
        energy = f"{min(energies):.2g}–{max(energies):.2g}" if energies else "–"
        ctx = p.get("context_use") or {}

        def gain(key: str) -> str:
            if key not in ctx:
                return "–"
            # A share of BERT's gain says something only once BERT uses context (early on its gain is ~0).
            share = f" ({ctx[key] / bert[key]:.0%})" if (bert.get(key) or 0) > MEANINGFUL_GAIN else ""
            return f"{ctx[key]:.3f}{share}"

        lines.append(f"| {name} | {p['what']} | " + " | ".join(cells) + f" | {p['escape_batch'] or 'not yet'} | "
                     f"{energy} | {gain('gain_window')} | {gain('gain_right')} | {p['date'][:10]} |")
    first = next(iter(probes.values()))
    lines += ["", f"Machine: {first['machine']['cpu']}, {first['machine']['threads']} thread per probe, two probes "
              "at a time; seconds are not compared here (bench/train_throughput.py measures speed)."]
    md = "\n".join(lines) + "\n"
    (out / "filter_probes.md").write_text(md)
    atomic_write_json(str(out / "filter_probes.json"), {"probes": probes})
    plot(probes, out / "filter_probes.png")
    return {"markdown": md}


def plot(probes: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, p in probes.items():
        line = a.plot([r["batch"] for r in p["eval"]], [r["loss"] for r in p["eval"]], marker="o", ms=3, label=name)
        rec = p["filter_energy"]
        if rec:
            names = [k for k, v in rec[-1]["energy_relative"].items() if v is not None]
            if names:
                worst = [min(r["energy_relative"][k] for k in names) for r in rec]
                b.semilogy([r["batch"] for r in rec], worst, marker="o", ms=3, color=line[0].get_color(), label=name)
    plateau = next(iter(probes.values()))["unigram_plateau"]
    a.axhline(plateau["loss"], color="grey", ls=":", label="unigram plateau")
    a.set_ylim(top=plateau["loss"] + 0.6)
    a.set(xlabel="batch (16×128 tokens)", ylabel="held-out MLM loss", title="MLM loss")
    b.axhline(0.1, color="grey", ls=":", label="10% of init")
    b.set(xlabel="batch", ylabel="min over filters of energy at lags ≥ 3 / init",
          title="Smallest implicit filter (lags ≥ 3), relative to init")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    first = next(iter(probes.values()))
    fig.suptitle(f"Filter-recipe probes: m2-bert-small recipes vs bert-small, 16×128-token batches, lr 1e-3, fp32 "
                 f"({first['machine']['cpu']}, 1 thread each, {first['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def guard(args: argparse.Namespace) -> dict[str, Any]:
    """The regression guard's run (``guard_run``) for each filter recipe: the measurements its thresholds come from."""
    import glob

    import torch

    from m2bert.data.convert_c4 import convert
    from m2bert.data.sample import make_sample
    from m2bert.data.tokenizer import train_wordpiece

    torch.set_num_threads(args.threads)
    root = args.work / "guard_sample"  # as tests/conftest.py's sample_mds builds it
    if not (root / "mds" / "val" / "index.json").exists():
        make_sample(root / "raw")
        train_wordpiece(sorted(glob.glob(str(root / "raw" / "c4" / "en" / "*.json"))), root / "tokenizer", vocab_size=2048)
        convert(str(root / "raw" / "c4" / "en"), str(root / "mds"), splits=("train", "val"),
                tokenizer=str(root / "tokenizer"), concat_tokens=128, progress=False)
    runs = args.work / f"guard_runs_{time.strftime('%Y%m%d-%H%M%S')}"
    results = {f: guard_run(str(root / "mds"), str(root / "tokenizer"), str(runs), f) for f in ("keep", "weak", "original")}
    out = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "command": " ".join(["python", "bench/filter_recipe_probes.py", *map(shlex.quote, sys.argv[1:])]),
           "machine": {**study.machine(), "threads": args.threads}, "settings": GUARD_SETTINGS,
           "thresholds": GUARD_THRESHOLDS, "results": results}
    lines = ["# Filter-recipe regression guard: m2-bert-tiny on the offline sample, 150 batches", "",
             f"{out['date']} · `{out['command']}` · thresholds (GUARD_THRESHOLDS, checked by tests/test_filter_recipe.py): {GUARD_THRESHOLDS}", "",
             "| filters= | held-out loss | masked acc. | smallest filter energy / init | gain from right | gain >8 tok |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {f} | {r['loss']} | {r['accuracy'] * 100:.1f}% | {r['filter_energy_min']:.3g} | {r['gain_right']} | "
              f"{r['gain_window']} |" for f, r in results.items()]
    atomic_write_json(str(args.out / "filter_guard.json"), out)
    (args.out / "filter_guard.md").write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("action", choices=["run", "report", "guard"])
    p.add_argument("names", nargs="*", help=f"probes to run: {', '.join(PROBES)}")
    p.add_argument("--shared", type=Path, default=shared_dir(), help="the read-only data folder")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="results: OUT/filter_probes/NAME.json")
    p.add_argument("--work", type=Path, default=Path("runs/filter_probes"), help="corpus, shards and runs")
    p.add_argument("--batches", type=int, default=150, help="pretraining batches per probe")
    p.add_argument("--batch-size", type=int, default=16, help="sequences of 128 tokens per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (every probe)")
    p.add_argument("--warmup", default="60ba", help="Composer time string")
    p.add_argument("--seed", type=int, default=17, help="one seed: same data order and masks for every probe")
    p.add_argument("--threads", type=int, default=1, help="torch threads per probe")
    p.add_argument("--context-rows", type=int, default=64, help="held-out rows for the context-use losses")
    p.add_argument("--quick", action="store_true", help="a few batches on a slice of the corpus: plumbing only")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result file (a probe's or the guard's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.action == "report":
        print(report(args.out)["markdown"])
        return 0
    if args.action == "guard":
        if (args.out / "filter_guard.json").exists() and not args.overwrite:
            p.error(f"{args.out / 'filter_guard.json'} holds an earlier guard run: pass --overwrite to replace it")
        print(json.dumps(guard(args)["results"], indent=1))
        return 0
    unknown = [n for n in args.names if n not in PROBES]
    if unknown or not args.names:
        p.error(f"unknown probe(s) {unknown}; choose from {list(PROBES)}" if unknown else "name at least one probe")
    if args.quick:
        args.batches, args.batch_size, args.context_rows = 4, 4, 4
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    for name in args.names:
        target = args.out / "filter_probes" / f"{name}.json"
        if target.exists() and not args.overwrite:
            p.error(f"{target} holds an earlier probe: pass --overwrite to replace it")
        result = run_probe(name, args)
        atomic_write_json(str(target), result)
        log.info("%s: escape batch %s, final filter energy min %s, context %s", name, result["escape_batch"],
                 result["filter_energy_final_min"], result["context_use"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
