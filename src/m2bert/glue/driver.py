"""``m2bert-glue``: fine-tune a starting checkpoint on GLUE and print the paper's table.

    m2bert-glue start.path=runs/m2-bert-pretrain/hf                        # 8 tasks, 80M recipe
    m2bert-glue glue=m2_bert_base_110m start.kind=composer start.path=runs/x/checkpoints
    m2bert-glue -m tasks=[rte] glue.rte.lr=1e-5,3e-5,5e-5                  # sweep + sweep_report.md

Plan: every selected task × its seeds is a job. Round 1 runs the tasks that start from the pretrained
checkpoint; round 2 the tasks with ``start_from: mnli`` (RTE, MRPC, STS-B in the paper's recipe),
starting from the chain source task's (``chain.source_task``, MNLI) first seed's final model. If the
source task is not selected, its first seed runs anyway as a dependency, unless ``chain.checkpoint``
names an existing fine-tuned source model (an HF dir, e.g. ``<run>/jobs/mnli-seed19/final``: what
sweeps over RTE/MRPC/STS-B settings want). ``chain.enabled=false`` starts every task from the
pretrained checkpoint.

Jobs run one per GPU through a queue of GPU ids when more than one is available (worker processes,
each logging to ``<run_dir>/jobs/<task>-seed<seed>/log.txt``; the console gets one line per start and
finish), serially in this process otherwise. Everything is validated before the first job starts.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from m2bert import cli
from m2bert.cli import PRETRAIN_ONLY, register_resolvers, reject_foreign_groups
from m2bert.glue.schema import GlueConfig, register
from m2bert.options import ConfigError
from m2bert.train.torch_compile import normalize as normalize_compile

log = logging.getLogger("m2bert.glue")
register()
register_resolvers()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """``yamls/glue.yaml`` composed with command-line style overrides, for calling ``run`` from Python:

        cfg = compose_config(["glue=m2_bert_tiny", "start.path=runs/x/hf", "data.source=sample/glue",
                              "tasks=[sample-ss,sample-pair]", "train_subset=256", "max_duration=20ba"])
        results = run(cfg)   # results["table"], results["paths"], results["glue_average"], ...
    """
    return cli.compose("glue", overrides)


def settings_key(task: str) -> str:
    """``sample-pair`` → ``sample_pair``: the YAML/schema key of a task's settings."""
    return task.replace("-", "_")


def normalise_tasks(names: list[str]) -> list[str]:
    from m2bert.data.glue import get_task

    out: list[str] = []
    for n in names:
        try:
            name = get_task(str(n)).name
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from e
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("tasks is empty")
    return out


def task_settings(cfg: DictConfig, task: str) -> dict[str, Any]:
    node = cfg.glue.get(settings_key(task))
    if node is None:
        raise ConfigError(f"glue.{settings_key(task)} is not set in this recipe (glue.model_size={cfg.glue.model_size}); "
                          f"add it to the glue/ YAML or pick a recipe that has it")
    s = OmegaConf.to_container(node, resolve=True)  # optimizer, pooling, start_from: checked by the schema's types
    if not s["seeds"]:
        raise ConfigError(f"glue.{settings_key(task)}.seeds is empty")
    return s


def check_data(source: str, tasks: list[str]) -> None:
    """Every train and eval file exists and every row parses with its label in range (local GLUE folder);
    the hub source is checked when loaded."""
    from pathlib import Path

    from m2bert.data.glue import HF_SOURCES, get_task, validate_task_files

    if str(source) in HF_SOURCES:
        return
    root = Path(source).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.source={source}: no such GLUE folder")
    for task in tasks:
        t = get_task(task)
        for split in ("train", *t.eval_splits):
            f = root / t.dir_name / t.splits[split]
            if not f.is_file():
                raise ConfigError(f"data.source={source}: {f} is missing ({t.name} {split})")
    for task in tasks:  # every row of every selected task, so a bad row in the last task stops round 1 too
        try:
            validate_task_files(root, task, ("train", *get_task(task).eval_splits))
        except ValueError as e:
            raise ConfigError(f"data.source={source}: {e}") from e


def plan(cfg: DictConfig) -> dict[str, Any]:
    """Tasks, their settings and the two rounds; raises ConfigError on anything inconsistent."""
    tasks = normalise_tasks(list(cfg.tasks))
    settings = {t: task_settings(cfg, t) for t in tasks}
    source = normalise_tasks([cfg.chain.source_task])[0] if cfg.chain.enabled else None
    round2 = [t for t in tasks if cfg.chain.enabled and settings[t]["start_from"] == "mnli"]
    round1 = [t for t in tasks if t not in round2]
    dependency = False
    if round2:
        if source in round2:
            raise ConfigError(f"chain.source_task={source} itself has start_from: mnli; it must start from the pretrained checkpoint")
        if source not in round1 and not cfg.chain.checkpoint:
            s = task_settings(cfg, source)
            settings[source] = dict(s, seeds=s["seeds"][:1])
            round1.insert(0, source)
            dependency = True
            log.warning("%s start from %s, which is not in tasks: running %s (first seed) first", round2, source, source)
    return {"tasks": tasks, "settings": settings, "round1": round1, "round2": round2, "source": source,
            "source_is_dependency": dependency}


def job_specs(cfg: DictConfig, run_dir: str, tasks: list[str], settings: dict[str, Any], start: Any, rnd: int,
              source: str | None) -> list[Any]:
    from m2bert.glue.jobs import JobSpec

    hparams = OmegaConf.to_container(cfg, resolve=True)  # logged by every job, to every logger
    specs = []
    for task in tasks:
        s = settings[task]
        for i, seed in enumerate(s["seeds"]):
            save = cfg.save_final == "all" or (cfg.save_final == "chain" and task == source and i == 0)
            specs.append(JobSpec(
                task=task, seed=int(seed), round=rnd, settings=s, start=start.spec(), data_source=str(cfg.data.source),
                out_dir=os.path.join(run_dir, "jobs", f"{task}-seed{seed}"), max_seq_len=cfg.data.max_seq_len,
                pad_to_max_length=cfg.data.pad_to_max_length, train_subset=cfg.train_subset, eval_subset=cfg.eval_subset, max_duration=cfg.max_duration,
                betas=list(cfg.glue.optimizer.betas), eps=cfg.glue.optimizer.eps, t_warmup=cfg.glue.scheduler.t_warmup,
                alpha_f=cfg.glue.scheduler.alpha_f, device=cfg.device, precision=cfg.precision,
                eval_batch_size=cfg.device_eval_batch_size, microbatch_size=cfg.device_train_microbatch_size,
                grad_clip_norm=cfg.grad_clip_norm, save_final=save, console_log_interval=cfg.console_log_interval,
                kernels=str(cfg.impl.kernels), compile=normalize_compile(cfg.impl.compile, "impl.compile"),
                logger=OmegaConf.to_container(cfg.logger, resolve=True), wandb_group=cfg.run_name, hparams=hparams,
            ))
    return specs


def gpu_ids(cfg: DictConfig) -> list[int]:
    if cfg.gpus is not None:
        return [int(g) for g in cfg.gpus]
    import torch

    if cfg.device == "cpu" or not torch.cuda.is_available():
        return []
    return list(range(torch.cuda.device_count()))


def run_serial(specs: list[Any], start: Any, done: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Jobs one after the other; each finished job's result is also appended to ``done`` at once."""
    from m2bert.glue.jobs import run_job

    results = []
    for i, spec in enumerate(specs, 1):
        log.info("job %d/%d: %s (round %d)", i, len(specs), spec.name, spec.round)
        results.append(run_job(spec, start))
        if done is not None:
            done.append(results[-1])
    return results


def run_queue(specs: list[Any], gpus: list[int], done: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One worker process per GPU id at a time; a finished worker frees its GPU for the next job.

    Each worker's output goes to its job folder's log.txt, so the console shows only start/finish
    lines. A failed job does not stop the others; the queue raises at the end, naming the logs.
    """
    import json

    from m2bert.glue.jobs import format_metrics, save_spec

    pending = list(specs)
    free = list(gpus)
    running: dict[int, tuple[Any, subprocess.Popen, Any, float]] = {}
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    while pending or running:
        while pending and free:
            spec, gpu = pending.pop(0), free.pop(0)
            spec_path = os.path.join(spec.out_dir, "spec.json")
            save_spec(spec, spec_path)
            logf = open(os.path.join(spec.out_dir, "log.txt"), "w")
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu), PYTHONUNBUFFERED="1")
            if spec.device == "cpu":  # CPU "slots" (tests): keep workers from oversubscribing the cores
                env.setdefault("OMP_NUM_THREADS", "1")
            proc = subprocess.Popen([sys.executable, "-m", "m2bert.glue.jobs", spec_path], stdout=logf,
                                    stderr=subprocess.STDOUT, env=env)
            running[gpu] = (spec, proc, logf, time.perf_counter())
            log.info("[gpu %d] start %s (round %d) → %s", gpu, spec.name, spec.round, os.path.join(spec.out_dir, "log.txt"))
        time.sleep(0.5)
        for gpu, (spec, proc, logf, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            logf.close()
            del running[gpu]
            free.append(gpu)
            result_path = os.path.join(spec.out_dir, "result.json")
            if proc.returncode == 0 and os.path.isfile(result_path):
                with open(result_path) as f:
                    results[spec.name] = json.load(f)
                if done is not None:
                    done.append(results[spec.name])
                log.info("[gpu %d] done  %s in %.0f s: %s", gpu, spec.name, time.perf_counter() - t0,
                         format_metrics(results[spec.name]["metrics"]))
            else:
                failed.append(f"{spec.name} (exit {proc.returncode}; log {os.path.join(spec.out_dir, 'log.txt')})")
                log.error("[gpu %d] FAILED %s (exit %s); see %s", gpu, spec.name, proc.returncode,
                          os.path.join(spec.out_dir, "log.txt"))
    if failed:
        raise RuntimeError(f"{len(failed)} GLUE job(s) failed: " + "; ".join(failed))
    return [results[s.name] for s in specs]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate, run round 1 and round 2 (the chain), aggregate; returns results incl. table and paths."""
    from m2bert.glue.checks import check_tokenizer
    from m2bert.glue.jobs import get_tokenizer
    from m2bert.glue.results import write_results
    from m2bert.glue.start import max_length, padding_invariant, resolve_start
    from m2bert.train.builders import resolve_device_and_precision

    t0 = time.perf_counter()
    cli.check_missing(cfg)
    if cfg.save_final not in ("chain", "all", "none"):
        raise ConfigError(f"save_final={cfg.save_final!r}; choose chain, all or none")
    if cfg.execution not in ("auto", "serial", "queue"):
        raise ConfigError(f"execution={cfg.execution!r}; choose auto, serial or queue")
    p = plan(cfg)
    check_data(cfg.data.source, p["round1"] + p["round2"])
    resolve_device_and_precision(cfg.device, cfg.precision)
    start = resolve_start(cfg.start.kind, cfg.start.path, cfg.start.config, cfg.start.tokenizer,
                          trust=cfg.start.trust_checkpoint)
    if p["round2"] and cfg.chain.checkpoint:
        resolve_start("hf", cfg.chain.checkpoint, tokenizer=start.tokenizer)  # fail now, not after round 1
    check_tokenizer(start, get_tokenizer(start.tokenizer))
    if not cfg.data.pad_to_max_length and not padding_invariant(start.config):
        raise ConfigError(f"data.pad_to_max_length=false needs a padding-invariant model; {start.path} is not "
                          "(an original checkpoint reproduces the original, whose outputs depend on padding)")
    limit = max_length(start.config)
    if cfg.data.max_seq_len > limit:
        raise ConfigError(f"data.max_seq_len={cfg.data.max_seq_len} exceeds what {start.path} supports ({limit})")
    run_dir = cfg.run_dir or os.path.join(cfg.run_root, cfg.run_name)
    gpus = gpu_ids(cfg)
    queue = cfg.execution == "queue" or (cfg.execution == "auto" and len(gpus) > 1)
    if queue and not gpus:
        raise ConfigError("execution=queue needs GPU ids (gpus=[0,1,...]) or visible GPUs")
    log.info("GLUE: %s; round 1 %s; round 2 %s (from %s); %s; run dir %s", cfg.glue.model_size, p["round1"], p["round2"],
             p["source"], f"queue over GPUs {gpus}" if queue else "serial", run_dir)

    finished: list[dict[str, Any]] = []

    def run_round(specs: list[Any], st: Any) -> list[dict[str, Any]]:
        return run_queue(specs, gpus, finished) if queue else run_serial(specs, st, finished)

    label = str(cfg.run_name)  # the row says which run it is; the start is in results.json
    try:
        jobs, chain_start = run_rounds(cfg, run_dir, p, start, run_round)
    except Exception as e:
        if finished:  # keep what finished: results.* of those jobs, with the failure named
            write_results(run_dir, finished, cfg.glue.model_size, label, cfg.published, cfg.plot,
                          {"run_dir": run_dir, "failed": f"{type(e).__name__}: {e}",
                           "overrides": list(cfg.get("_overrides_", []) or [])})
            log.error("GLUE run failed after %d job(s); their results are in %s", len(finished),
                      os.path.join(run_dir, "results.json"))
        raise
    extra = {
        "run_dir": run_dir, "start": {"kind": start.kind, "path": start.path, "tokenizer": start.tokenizer},
        "rounds": {"1": p["round1"], "2": p["round2"]}, "chain_source": p["source"],
        "chain_checkpoint": chain_start.path if chain_start else None,
        "overrides": list(cfg.get("_overrides_", []) or []), "time_s": round(time.perf_counter() - t0, 1),
    }
    results = write_results(run_dir, jobs, cfg.glue.model_size, label, cfg.published, cfg.plot, extra)
    log.info("GLUE results (%s):\n%s", results["paths"]["markdown"], results["table"])
    return results


def run_rounds(cfg: DictConfig, run_dir: str, p: dict[str, Any], start: Any, run_round: Any) -> tuple[list[Any], Any]:
    """Round 1, then round 2 from the chain source; returns the jobs' results and the chain start."""
    from m2bert.glue.start import resolve_start

    jobs = run_round(job_specs(cfg, run_dir, p["round1"], p["settings"], start, 1, p["source"]), start)
    chain_start = None
    if p["round2"]:
        if cfg.chain.checkpoint:
            chain_start = resolve_start("hf", cfg.chain.checkpoint, tokenizer=start.tokenizer)
        else:
            source_job = next(j for j in jobs if j["task"] == p["source"])
            if not source_job.get("final_model"):
                raise RuntimeError(f"the chain source {p['source']} (seed {source_job['seed']}) saved no final model")
            chain_start = resolve_start("hf", source_job["final_model"], tokenizer=start.tokenizer)
        log.info("round 2 %s starts from %s", p["round2"], chain_start.path)
        jobs += run_round(job_specs(cfg, run_dir, p["round2"], p["settings"], chain_start, 2, p["source"]), chain_start)
    return jobs, chain_start


@hydra.main(config_path="pkg://m2bert.yamls", config_name="glue", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cli.task_started()
    hc = HydraConfig.get()
    with_overrides = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(with_overrides, False)
    with_overrides["_overrides_"] = list(hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN and not cfg.run_dir:
        with_overrides["run_dir"] = hc.runtime.output_dir  # each sweep job in its own folder
    try:
        results = run(with_overrides)
    except cli.USER_ERRORS as e:
        cli.fail("m2bert-glue", e)
    print(results["table"])


def main() -> None:
    """The ``m2bert-glue`` console script: pretraining's groups (``model=...``) are refused, and user errors
    are one line on stderr, exit 2."""
    reject_foreign_groups("m2bert-glue", PRETRAIN_ONLY)
    cli.check_choices("m2bert-glue", GlueConfig)
    cli.entry(hydra_main)


if __name__ == "__main__":
    main()
