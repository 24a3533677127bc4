"""One fine-tuning job: (task, seed, settings, start) → metrics on every dev split of the task.

A single generic job parameterised by the task's settings (``TaskSettings`` from the recipe) and the task
table (``m2bert.data.glue_tasks.GLUE_TASKS``: labels, text columns, metrics, eval splits) — no class per
task. ``run_job`` reads top to bottom: data, model, trainer, fit, evaluate, export. Training data is
shuffled (a seeded sampler; the older drivers fed it unshuffled); evaluation covers the full dev sets
unless ``eval_subset`` says otherwise; metrics are GLUE's (``metric_fns``).

Where jobs run (in this process, or one worker per GPU) is ``m2bert.glue.execute``'s business.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch

from m2bert.atomic import atomic_write_json
from m2bert.data.glue_tasks import GlueTask, cached_tokenizer, get_task, metric_fns, pad_collate, task_dataset
from m2bert.glue.schema import GlueConfig, StartConfig, TaskSettings
from m2bert.glue.start import Start, check_padding, load_classifier, resolve_start_config
from m2bert.options import loggable

log = logging.getLogger(__name__)


@dataclass
class JobSpec:
    """Everything one job needs, as the schema's own dataclasses (a worker process reads it back typed)."""

    task: str
    seed: int
    round: int
    settings: TaskSettings  # the task's recipe (for a chain dependency: its first seed only)
    start: StartConfig  # this job's start: the pretrained model, or the chain source's fine-tuned one
    out_dir: str
    config: GlueConfig  # the run's shared settings (data, optimizer, scheduler, device, logger…)
    save_final: bool = False
    start_sha256: str = ""  # of the start's weights file(s): part of what a resumed run compares

    @property
    def name(self) -> str:
        return f"{self.task}-seed{self.seed}"

    def duration(self) -> str:
        return self.config.max_duration or self.settings.max_duration or f"{self.settings.epochs}ep"

    def train_subset(self) -> Optional[int]:
        return self.settings.train_subset or self.config.train_subset

    def fingerprint(self) -> dict[str, Any]:
        """What the job's result depends on: task, seed, recipe (as it takes effect: the duration and subset that
        apply, not the keys they came from; speed-only settings left out) and the start's weights. Written into
        result.json; ``resume=true`` reuses a finished job only when it is the same."""
        c = self.config
        own = {k: v for k, v in asdict(self.settings).items() if k not in ("seeds", "epochs", "max_duration",
                                                                           "train_subset")}
        recipe = {**own, "max_duration": self.duration(), "train_subset": self.train_subset(),
                  "eval_subset": c.eval_subset, "data": asdict(c.data), "optimizer": asdict(c.glue.optimizer),
                  "scheduler": asdict(c.glue.scheduler), "grad_clip_norm": c.grad_clip_norm, "precision": c.precision,
                  "save_final": self.save_final}
        return {"task": self.task, "seed": self.seed, "round": self.round, "start_sha256": self.start_sha256,
                "recipe": recipe}


@dataclass
class JobData:
    """The training split as the trainer sees it."""

    train: Any  # a tokenised datasets.Dataset
    collate_fn: Optional[Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]]  # None: rows padded already


@dataclass
class Evaluation:
    """What ``evaluate`` computed: GLUE metrics and how many rows each eval split had."""

    metrics: dict[str, dict[str, float]]  # {split: {metric: value in [0, 1]}}
    rows: dict[str, int] = field(default_factory=dict)  # {split: rows evaluated}


def run_job(spec: JobSpec, start: Optional[Start] = None) -> dict[str, Any]:
    """Fine-tune from ``start`` (resolved from ``spec.start`` when None), evaluate, export; returns the result."""
    from m2bert.train.builders import resolve_device_and_precision

    t0 = time.perf_counter()
    quiet_composer()
    task = get_task(spec.task)
    start = start or resolve_start_config(spec.start)
    device, precision = resolve_device_and_precision(spec.config.device, spec.config.precision)
    os.makedirs(spec.out_dir, exist_ok=True)

    data = job_data(spec, task, start)
    model = job_model(spec, task, start)
    composer_model = wrap_model(model, task)
    trainer = job_trainer(spec, task, start, composer_model, data, device, precision)
    trainer.fit()
    train_time = time.perf_counter() - t0
    evaluation = evaluate(composer_model, spec, start.tokenizer, device, precision == "amp_bf16", data.collate_fn)
    result: dict[str, Any] = {
        "task": task.name, "seed": spec.seed, "round": spec.round, "metrics": evaluation.metrics,
        "time_s": round(time.perf_counter() - t0, 2), "train_time_s": round(train_time, 2),
        "batches": int(trainer.state.timestamp.batch), "train_rows": len(data.train), "eval_rows": evaluation.rows,
        "start": {"kind": start.kind, "path": start.path}, "settings": asdict(spec.settings), "final_model": None,
        "spec": spec.fingerprint(),
    }
    if spec.save_final:
        result["final_model"] = export_final(spec, task, start, model, result)
    trainer.close()
    atomic_write_json(os.path.join(spec.out_dir, "result.json"), result)
    log.info("%s: %s (%.1f s)", spec.name, format_metrics(evaluation.metrics), result["time_s"])
    return result


def job_data(spec: JobSpec, task: GlueTask, start: Start) -> JobData:
    """The tokenised training split (cached across seeds) and, without fixed-length padding, its collate."""
    data = spec.config.data
    check_padding(start, data.pad_to_max_length)
    train = task_dataset(task.name, data.source, "train", start.tokenizer, data.max_seq_len, spec.train_subset(), True,
                         data.pad_to_max_length)
    pad_id = cached_tokenizer(start.tokenizer).pad_token_id or 0
    return JobData(train=train, collate_fn=None if data.pad_to_max_length else pad_collate(pad_id))


def job_model(spec: JobSpec, task: GlueTask, start: Start) -> torch.nn.Module:
    """The start's encoder with a fresh classifier layer (its init depends on the seed) and GLUE's label names."""
    from composer.utils import reproducibility

    reproducibility.seed_all(spec.seed)
    model = load_classifier(start, task.num_labels, spec.settings.pooling, spec.config.impl.kernels)
    if task.label_names is not None:  # the export's pipeline then answers with GLUE's label names
        model.config.id2label = dict(enumerate(task.label_names))
        model.config.label2id = {name: i for i, name in enumerate(task.label_names)}
    return model


def wrap_model(model: torch.nn.Module, task: GlueTask) -> Any:
    """The classifier as a Composer model (its loss: cross-entropy, or MSE for regression)."""
    from m2bert.train.composer_models import ComposerClassifier

    return ComposerClassifier(model, task.num_labels)


def build_optimizer(model: torch.nn.Module, spec: JobSpec) -> torch.optim.Optimizer:
    """The task's optimizer, lr and weight decay with the recipe's shared betas and eps."""
    from m2bert.train import builders
    from m2bert.train.schema import OptimizerConfig

    s, shared = spec.settings, spec.config.glue.optimizer
    return builders.build_optimizer(model, OptimizerConfig(  # type: ignore[arg-type]  # read by attribute
        name=s.optimizer, lr=s.lr, betas=list(shared.betas), eps=shared.eps, weight_decay=s.weight_decay,
        filter_decay=shared.filter_decay))


def job_trainer(spec: JobSpec, task: GlueTask, start: Start, composer_model: Any, data: JobData, device: str,
                precision: str) -> Any:
    """Composer's Trainer for the job: seeded shuffled loader, optimizer, scheduler, loggers, compile."""
    from composer import Trainer
    from composer.algorithms import GradientClipping
    from composer.utils import dist
    from torch.utils.data import DataLoader

    from m2bert.train import builders
    from m2bert.train.callbacks import ProgressLine
    from m2bert.train.torch_compile import CompileTimer, composer_compile_config

    s, cfg = spec.settings, spec.config
    loader = DataLoader(data.train, batch_size=s.batch_size, drop_last=False, num_workers=0,
                        sampler=dist.get_sampler(data.train, shuffle=True, seed=spec.seed), collate_fn=data.collate_fn)
    optimizer = build_optimizer(composer_model.model, spec)
    scheduler = builders.build_scheduler(cfg.glue.scheduler)  # type: ignore[arg-type]  # read by attribute
    compile_config = composer_compile_config(cfg.impl.compile, device, key="impl.compile")
    log.info("%s round %d: lr %g, wd %g, %s, %s, batch %d, pooling %s, %d train rows, start %s (%s)",
             spec.name, spec.round, s.lr, s.weight_decay, s.optimizer, spec.duration(), s.batch_size, s.pooling,
             len(data.train), start.path, start.kind)
    clip = [GradientClipping(clipping_type="norm", clipping_threshold=cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else []
    trainer = Trainer(
        model=composer_model,
        train_dataloader=loader,
        optimizers=optimizer,
        schedulers=scheduler,
        max_duration=spec.duration(),
        algorithms=clip,
        device=device,
        precision=precision,
        device_train_microbatch_size=min(cfg.device_train_microbatch_size or s.batch_size, s.batch_size),
        seed=spec.seed,
        run_name=spec.name,
        progress_bar=False,
        log_to_console=False,  # Composer's would print the whole config and a line per metric, per job
        loggers=builders.build_loggers(asdict(cfg.logger), spec.name, group=cfg.run_name),
        compile_config=compile_config,
        callbacks=[ProgressLine(spec.name, cfg.console_log_interval)]
        + ([CompileTimer()] if compile_config is not None else []),
    )
    trainer.logger.log_hyperparameters(loggable({"glue": cfg, "job": {
        "task": task.name, "seed": spec.seed, "round": spec.round, "settings": asdict(s), "start": start.path,
        "max_duration": spec.duration()}}))
    return trainer


def quiet_composer() -> None:
    """Composer's INFO messages (seeding, schedulers, devices) repeat for every job: WARNING and up only, unless
    its level was set on purpose (``hydra.verbose=composer``)."""
    composer_log = logging.getLogger("composer")
    if composer_log.level == logging.NOTSET:
        composer_log.setLevel(logging.WARNING)


@torch.no_grad()
def predict(composer_model: Any, dataset: Any, batch_size: int, device: torch.device, bf16: bool,
            collate_fn: Any = None) -> tuple[Any, Any]:
    """Predictions and labels over a whole dataset, in order."""
    import numpy as np
    from torch.utils.data import DataLoader

    composer_model.eval()
    preds, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn):
        batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = composer_model(batch)
        preds.append(composer_model.predictions(outputs).cpu())
        labels.append(batch["labels"].cpu())
    return torch.cat(preds).numpy(), np.asarray(torch.cat(labels).numpy())


def evaluate(composer_model: Any, spec: JobSpec, tokenizer_spec: str, device: str, bf16: bool,
             collate_fn: Any = None) -> Evaluation:
    """GLUE metrics on every eval split of the task (``device``: Composer's ``gpu`` or ``cpu``)."""
    task = get_task(spec.task)
    data = spec.config.data
    torch_device = torch.device("cuda") if device == "gpu" else torch.device("cpu")
    fns = metric_fns()
    evaluation = Evaluation(metrics={})
    for split in task.eval_splits:
        ds = task_dataset(task.name, data.source, split, tokenizer_spec, data.max_seq_len, spec.config.eval_subset,
                          False, data.pad_to_max_length)
        p, r = predict(composer_model, ds, spec.config.device_eval_batch_size, torch_device, bf16, collate_fn)
        evaluation.metrics[split] = {m: float(fns[m](p, r)) for m in task.metrics}
        evaluation.rows[split] = len(r)
    return evaluation


def export_final(spec: JobSpec, task: GlueTask, start: Start, model: torch.nn.Module, result: dict[str, Any]) -> str:
    """The fine-tuned model as an HF directory ``<out_dir>/final`` (with tokenizer and model card)."""
    from m2bert.train.builders import atomic_save_pretrained

    return atomic_save_pretrained(model, cached_tokenizer(start.tokenizer), os.path.join(spec.out_dir, "final"),
                                  card=glue_card(spec, task, start, result))


def glue_card(spec: JobSpec, task: GlueTask, start: Start, result: dict[str, Any]) -> str:
    """The fine-tuned export's README.md: task, start, recipe, dev-set metrics."""
    from m2bert.train.model_card import model_card

    from m2bert.config import preset_of
    from m2bert.glue.results import subsets_note

    s, c = spec.settings, spec.config
    training = {
        "task": f"{task.name} ({'regression' if task.is_regression else f'{task.num_labels} classes'})",
        "start model": preset_of(start.config),
        "started from": f"{start.path} ({start.kind})", "data": c.data.source, "seed": spec.seed,
        "max_duration": spec.duration(),
        "steps": f"{result['batches']} batches of {s.batch_size} ({result['train_rows']} rows)",
        "train_subset": spec.train_subset() or "null (the full training set)",
        "eval_subset": c.eval_subset or "null (the full dev set)",
        "optimizer": f"{s.optimizer}, lr {s.lr}, weight decay {s.weight_decay}", "pooling": s.pooling,
        "max sequence length": c.data.max_seq_len,
    }
    note = subsets_note({"train_subset": spec.train_subset(), "eval_subset": c.eval_subset})
    evals = {f"{split} {name}": f"{value:.4f}" for split, values in result["metrics"].items()
             for name, value in values.items()}
    labels = dict(enumerate(task.label_names)) if task.label_names is not None else None
    return model_card(f"{task.name}-seed{spec.seed}: {preset_of(start.config)} fine-tuned on {task.name}"
                      + (f", {note}" if note else ""),
                      "A sequence classifier fine-tuned with m2bert-glue (the GLUE driver).", training,
                      "AutoModelForSequenceClassification", evals, labels)


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{split if len(metrics) > 1 else ''}{'/' if len(metrics) > 1 else ''}{m} {100 * v:.2f}"
                     for split, ms in metrics.items() for m, v in ms.items())
