"""``m2bert-glue``: fine-tune a starting checkpoint on GLUE and print the paper's table.

    m2bert-glue start.path=runs/m2-bert-pretrain/hf                        # 8 tasks, 80M recipe
    m2bert-glue glue=m2_bert_base_110m start.kind=composer start.path=runs/x/checkpoints
    m2bert-glue -m tasks=[rte] glue.rte.lr=1e-5,3e-5,5e-5                  # sweep + sweep_report.md

The composed config becomes the schema's dataclasses once (``load_config``: a key the schema lacks stops
the run there) and travels as such: plan → job specs → ``m2bert.glue.jobs.run_job``.

Plan: every selected task × its seeds is a job. Round 1 runs the tasks that start from the pretrained
checkpoint; round 2 the tasks with ``start_from: mnli`` (RTE, MRPC, STS-B in the paper's recipe),
starting from the first seed's final model of the chain source, whatever task ``chain.source_task``
names (MNLI by default). If the source task is not selected, its first seed runs anyway as a
dependency, unless ``chain.checkpoint`` names an existing fine-tuned source model (an HF dir, e.g.
``<run>/jobs/mnli-seed19/final``: what sweeps over RTE/MRPC/STS-B settings want).
``chain.enabled=false`` starts every task from the pretrained checkpoint.

The run folder is claimed first (``m2bert.run_folder``): locked, and refused if it holds an earlier run, unless
``overwrite=true`` (deleted first) or ``resume=true``: then a job whose ``result.json`` records the same spec
(task, seed, recipe, the start's weights sha256: ``JobSpec.fingerprint``) is reused, one with another spec is
refused naming the setting, the rest run, and the table is rebuilt from all of them.

Jobs run one per GPU through a queue of GPU ids when more than one is available, serially in this
process otherwise (``m2bert.glue.execute``). Everything is validated before the first job starts.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from m2bert import cli
from m2bert.cli import PRETRAIN_ONLY, register_resolvers, reject_foreign_groups
from m2bert.glue.schema import (
    GlueConfig,
    StartConfig,
    TaskSettings,
    register,
    to_glue_config,
)
from m2bert.options import ConfigError
from m2bert.run_folder import RunFolder, check_run_name, claimed

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


def normalise_tasks(names: list[str], key: str = "tasks") -> list[str]:
    from m2bert.data.glue_tasks import get_task

    out: list[str] = []
    for n in names:
        try:
            name = get_task(str(n)).name
        except KeyError as e:
            raise ConfigError(f"{key}: {e.args[0]}") from e
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"{key} is empty")
    return out


def task_settings(config: GlueConfig, task: str) -> TaskSettings:
    """The recipe's settings of ``task``; a ConfigError names the key if they are missing or not allowed."""
    key = f"glue.{settings_key(task)}"
    s: TaskSettings | None = getattr(config.glue, settings_key(task), None)
    if s is None:
        raise ConfigError(f"{key} is not set in this recipe (glue.model_size={config.glue.model_size}); "
                          f"add it to the glue/ YAML or pick a recipe that has it")
    # optimizer, pooling, start_from: checked by the schema's types at composition
    if not s.seeds:
        raise ConfigError(f"{key}.seeds is empty")
    return s


@dataclass
class Plan:
    """Which tasks run, with which settings, in which round."""

    tasks: list[str]  # as selected (``tasks=``)
    settings: dict[str, TaskSettings]  # per task that runs, the chain source included
    round1: list[str]  # from the pretrained start
    round2: list[str]  # from the chain source's fine-tuned model (``start_from: mnli``)
    source: str | None  # the chain source task (``chain.source_task``); None with chain.enabled=false
    source_is_dependency: bool = False  # the source runs only because round 2 needs it (first seed)

    def needs_source_model(self, config: GlueConfig) -> bool:
        """Round 2 starts from the source's first seed trained in this run (not from ``chain.checkpoint``)."""
        return bool(self.round2) and not config.chain.checkpoint


def plan(config: GlueConfig) -> Plan:
    """Tasks, their settings and the two rounds; raises ConfigError on anything inconsistent."""
    tasks = normalise_tasks(list(config.tasks))
    settings = {t: task_settings(config, t) for t in tasks}
    chain = config.chain
    source = normalise_tasks([chain.source_task], "chain.source_task")[0] if chain.enabled else None
    round2 = [t for t in tasks if chain.enabled and settings[t].start_from == "mnli"]
    round1 = [t for t in tasks if t not in round2]
    dependency = False
    if round2:
        if source in round2:
            raise ConfigError(f"chain.source_task={source} itself has start_from: mnli; it must start from the "
                              f"pretrained checkpoint (set glue.{settings_key(source)}.start_from=pretrained)")
        if source not in round1 and not chain.checkpoint:
            s = task_settings(config, source)
            settings[source] = replace(s, seeds=s.seeds[:1])
            round1.insert(0, source)
            dependency = True
            log.warning("%s start from %s, which is not in tasks: running %s (first seed) first", round2, source, source)
    return Plan(tasks, settings, round1, round2, source, dependency)


def job_specs(config: GlueConfig, p: Plan, run_dir: str, tasks: list[str], start: StartConfig, rnd: int,
              start_sha256: str = "") -> list[Any]:
    """One JobSpec per task and seed. The chain source's first seed keeps its final model whenever round 2
    starts from it (whatever ``save_final`` says: round 2 cannot start otherwise)."""
    from m2bert.glue.jobs import JobSpec

    specs = []
    for task in tasks:
        s = p.settings[task]
        for i, seed in enumerate(s.seeds):
            chain_source = task == p.source and i == 0
            save = config.save_final == "all" or (chain_source and (config.save_final == "chain"
                                                                     or p.needs_source_model(config)))
            specs.append(JobSpec(task=task, seed=int(seed), round=rnd, settings=s, start=start,
                                 out_dir=os.path.join(run_dir, "jobs", f"{task}-seed{seed}"), config=config,
                                 save_final=save, start_sha256=start_sha256))
    return specs


def load_config(cfg: DictConfig) -> GlueConfig:
    """The composed config, every mandatory value set, as the schema's dataclasses."""
    cli.check_missing(cfg)
    return to_glue_config(cfg)


def check_choices(config: GlueConfig) -> None:
    """The one choice the schema's types cannot check (impl.compile is a str: Hydra reads ``true`` as a bool)."""
    from m2bert.train.torch_compile import normalize as normalize_compile

    normalize_compile(config.impl.compile, "impl.compile")


def run_folder(cfg: Any) -> RunFolder:
    """The run folder (``run_dir``, default ``<run_root>/<run_name>``) and how an earlier run there may be reused
    (``resume``, ``overwrite``); the Hydra callback (yamls/glue.yaml) claims it before Hydra writes there."""
    name = check_run_name(cfg.run_name)
    path = Path(cfg.run_dir) if cfg.run_dir else Path(cfg.run_root) / name
    return RunFolder(path, resume_key="resume", resume=bool(cfg.resume), overwrite=bool(cfg.overwrite))


def run(cfg: DictConfig | GlueConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Validate, claim the run folder, run round 1 and round 2 (the chain), aggregate; returns results incl.
    table and paths.

    ``overrides``: the command line's, recorded in results.json (the sweep report groups by them).
    """
    from m2bert.glue.checks import check_data, check_start, check_values
    from m2bert.glue.execute import gpu_ids
    from m2bert.glue.start import resolve_start_config
    from m2bert.train.builders import resolve_device_and_precision

    t0 = time.perf_counter()
    config = cfg if isinstance(cfg, GlueConfig) else load_config(cfg)
    folder = run_folder(config)
    check_choices(config)
    p = plan(config)
    check_values(config, {f"glue.{settings_key(t)}": s for t, s in p.settings.items()})
    check_data(config.data.source, p.round1 + p.round2)
    resolve_device_and_precision(config.device, config.precision)
    start = resolve_start_config(config.start)
    check_start(config, start, chain_checkpoint=bool(p.round2))
    gpus = gpu_ids(config.gpus, config.device)
    queue = config.execution == "queue" or (config.execution == "auto" and len(gpus) > 1)
    if queue and not gpus:
        raise ConfigError("execution=queue needs GPU ids (gpus=[0,1,...]) or visible GPUs")
    with claimed(folder):
        return run_claimed(config, str(folder.path), p, start, gpus if queue else None, overrides, t0)


def run_settings(config: GlueConfig, p: Plan, start: Any) -> dict[str, Any]:
    """What the reports say the run was: the start model's size by its config (not the recipe's name), the
    duration, the subsets and the seeds (a value per task where the tasks differ)."""
    from m2bert.config import preset_of

    def per_task(values: dict[str, Any]) -> Any:
        return next(iter(values.values())) if len(set(map(str, values.values()))) == 1 else values

    durations = {t: config.max_duration or s.max_duration or f"{s.epochs}ep" for t, s in p.settings.items()}
    subsets = {t: s.train_subset or config.train_subset for t, s in p.settings.items()}
    return {"start_model": preset_of(start.config), "start": start.path, "start_kind": str(start.kind),
            "recipe": config.glue.model_size, "max_duration": per_task(durations), "train_subset": per_task(subsets),
            "eval_subset": config.eval_subset, "seeds": {t: list(s.seeds) for t, s in p.settings.items()}}


def run_claimed(config: GlueConfig, run_dir: str, p: Plan, start: Any, queue_gpus: list[int] | None,
                overrides: list[str] | None, t0: float) -> dict[str, Any]:
    """The rounds in the claimed run folder (on the GPU queue when ``queue_gpus``), then the results files."""
    from m2bert.glue.execute import run_queue, run_serial
    from m2bert.glue.results import write_results

    log.info("GLUE: %s; round 1 %s; round 2 %s (from %s); %s; run dir %s", config.glue.model_size, p.round1, p.round2,
             p.source, f"queue over GPUs {queue_gpus}" if queue_gpus is not None else "serial", run_dir)

    finished: list[dict[str, Any]] = []

    def run_round(specs: list[Any], st: Any) -> list[dict[str, Any]]:
        reused = {s.name: r for s in specs if config.resume and (r := finished_result(s)) is not None}
        finished.extend(reused.values())
        todo = [s for s in specs if s.name not in reused]
        if not todo:
            ran: list[dict[str, Any]] = []
        elif queue_gpus is not None:
            ran = run_queue(todo, queue_gpus, finished)
        else:
            ran = run_serial(todo, st, finished)
        results = {**reused, **{s.name: r for s, r in zip(todo, ran)}}
        return [results[s.name] for s in specs]

    label = str(config.run_name)  # the row says which run it is; the start is in results.json
    settings = run_settings(config, p, start)
    try:
        jobs, chain_start = run_rounds(config, run_dir, p, start, run_round)
    except ConfigError:
        raise  # a refusal (resume=true with another spec): the earlier run's results stay as they are
    except Exception as e:
        if finished:  # keep what finished: results.* of those jobs, with the failure named
            write_results(run_dir, finished, config.glue.model_size, label, config.published, config.plot,
                          {"run_dir": run_dir, "failed": f"{type(e).__name__}: {e}", "overrides": list(overrides or [])},
                          settings)
            log.error("GLUE run failed after %d job(s); their results are in %s", len(finished),
                      os.path.join(run_dir, "results.json"))
        raise
    extra = {
        "run_dir": run_dir, "start": {"kind": start.kind, "path": start.path, "tokenizer": start.tokenizer},
        "rounds": {"1": p.round1, "2": p.round2}, "chain_source": p.source,
        "chain_checkpoint": chain_start.path if chain_start else None,
        "overrides": list(overrides or []), "time_s": round(time.perf_counter() - t0, 1),
    }
    results = write_results(run_dir, jobs, config.glue.model_size, label, config.published, config.plot, extra,
                            settings)
    log.info("GLUE results: %s (table, settings), %s, %s", results["paths"]["markdown"], results["paths"]["json"],
             results["paths"].get("chart", "no chart (plot=false)"))  # the table itself: the CLI prints it once
    return results


def finished_result(spec: Any) -> dict[str, Any] | None:
    """``resume=true``: the result of a job that finished before with this very spec (its ``result.json``, written
    atomically), or None when it has to run; one that finished with another spec is refused, naming the setting."""
    path = os.path.join(spec.out_dir, "result.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("resume: %s is unreadable (%s); %s runs again", path, e, spec.name)
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("spec"), dict) or "metrics" not in saved:
        raise ConfigError(f"resume=true: {path} records no job spec (an older m2bert wrote it), so it cannot be "
                          f"checked against this run; start afresh with overwrite=true or another run_name")
    ours, theirs = _flat(json.loads(json.dumps(spec.fingerprint()))), _flat(saved["spec"])
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise ConfigError(f"resume=true: {spec.name} finished with {key}={theirs.get(key)!r} ({path}), this run "
                              f"has {key}={ours.get(key)!r}; resume with the settings it ran with, or start afresh "
                              f"with overwrite=true or another run_name")
    log.info("resume: %s finished before (%s): reused", spec.name, path)
    return saved


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def run_rounds(config: GlueConfig, run_dir: str, p: Plan, start: Any, run_round: Any) -> tuple[list[Any], Any]:
    """Round 1, then round 2 from the chain source; returns the jobs' results and the chain start."""
    from m2bert.glue.start import resolve_start

    jobs = run_round(job_specs(config, p, run_dir, p.round1, start.spec(), 1, start.sha256()), start)
    chain_start = None
    if p.round2:
        if config.chain.checkpoint:
            chain_start = resolve_start("hf", config.chain.checkpoint, tokenizer=start.tokenizer)
        else:
            source_job = next(j for j in jobs if j["task"] == p.source)
            if not source_job.get("final_model"):
                raise RuntimeError(f"the chain source {p.source} (seed {source_job['seed']}) saved no final model")
            chain_start = resolve_start("hf", source_job["final_model"], tokenizer=start.tokenizer)
        log.info("round 2 %s starts from %s (%s's first seed)", p.round2, chain_start.path, p.source)
        jobs += run_round(job_specs(config, p, run_dir, p.round2, chain_start.spec(), 2, chain_start.sha256()),
                          chain_start)
    return jobs, chain_start


@hydra.main(config_path="pkg://m2bert.yamls", config_name="glue", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cli.task_started()
    hc = HydraConfig.get()
    try:
        config = load_config(cfg)
        if hc.mode == RunMode.MULTIRUN and not config.run_dir:
            config.run_dir = hc.runtime.output_dir  # each sweep job in its own folder
        results = run(config, overrides=list(hc.overrides.task))
    except cli.USER_ERRORS as e:
        cli.fail("m2bert-glue", e)
    print(Path(results["paths"]["markdown"]).read_text(), end="")  # title, settings, table: once


def main() -> None:
    """The ``m2bert-glue`` console script: pretraining's groups (``model=...``) are refused, and user errors
    are one line on stderr, exit 2."""
    reject_foreign_groups("m2bert-glue", PRETRAIN_ONLY)
    cli.check_choices("m2bert-glue", GlueConfig)
    cli.entry(hydra_main, "m2bert-glue", "glue")


if __name__ == "__main__":
    main()
