"""One fine-tuning job: (task, seed, settings, start) → metrics on every dev split of the task.

A single generic function parameterised by the task's YAML settings and the task table
(``m2bert.data.glue.GLUE_TASKS``: labels, text columns, metrics, eval splits) — no class per task.
Training data is shuffled (a seeded sampler; the older drivers fed it unshuffled); evaluation covers
the full dev sets unless ``eval_subset`` says otherwise; metrics are GLUE's (``metric_fns``).

Also a worker entry point (``python -m m2bert.glue.jobs spec.json``) for the multi-GPU queue.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from m2bert.atomic import atomic_write_json

log = logging.getLogger(__name__)

# Tokenised datasets, reused by later seeds (and later Hydra sweep jobs) in the same process.
_DATA_CACHE: dict[tuple[Any, ...], Any] = {}
_TOKENIZERS: dict[str, Any] = {}


@dataclass
class JobSpec:
    """Everything one job needs; JSON-serialisable so a worker process can run it."""

    task: str
    seed: int
    round: int
    settings: dict[str, Any]  # a TaskSettings as a dict
    start: dict[str, Any]  # Start.spec()
    data_source: str
    out_dir: str
    max_seq_len: int = 128
    pad_to_max_length: bool = True
    train_subset: int | None = None
    eval_subset: int | None = None
    max_duration: str | None = None  # overrides settings' epochs / max_duration
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    t_warmup: str = "0.06dur"
    alpha_f: float = 0.0
    device: str = "auto"
    precision: str = "auto"
    eval_batch_size: int = 128
    microbatch_size: int | None = None
    grad_clip_norm: float = 0.0
    save_final: bool = False
    console_log_interval: str = "50ba"
    kernels: str | None = None
    compile: str = "auto"  # torch.compile: auto (CUDA only) | true | false
    logger: dict[str, Any] | None = None  # the logger group (console | wandb), as in pretraining
    wandb_group: str | None = None  # W&B group: the GLUE run's name, so its jobs sit together
    hparams: dict[str, Any] | None = None  # the resolved GLUE config, logged to every logger

    @property
    def name(self) -> str:
        return f"{self.task}-seed{self.seed}"

    def duration(self) -> str:
        return self.max_duration or self.settings.get("max_duration") or f"{int(self.settings['epochs'])}ep"


def get_tokenizer(spec: str) -> Any:
    from m2bert.data.tokenizer import load_tokenizer

    if spec not in _TOKENIZERS:
        _TOKENIZERS[spec] = load_tokenizer(spec)
    return _TOKENIZERS[spec]


def task_dataset(task: str, source: str, split: str, tokenizer_spec: str, max_seq_len: int,
                 subset: int | None, shuffle_subset: bool, pad_to_max_length: bool = True) -> Any:
    """A tokenised split (cached). Train subsets take N rows of a fixed shuffle (seed 0), the same for
    every seed, so subsets keep the label mix; eval subsets take the first N rows."""
    import datasets

    from m2bert.data.glue import load_glue_task, tokenize_glue

    datasets.disable_progress_bars()
    key = (task, str(source), split, tokenizer_spec, max_seq_len, subset, pad_to_max_length)
    if key not in _DATA_CACHE:
        ds = load_glue_task(task, source, split)
        if subset is not None and subset < len(ds):
            ds = ds.shuffle(seed=0).select(range(subset)) if shuffle_subset else ds.select(range(subset))
        _DATA_CACHE[key] = tokenize_glue(ds, task, get_tokenizer(tokenizer_spec), max_length=max_seq_len,
                                         padding="max_length" if pad_to_max_length else False)
    return _DATA_CACHE[key]


def pad_collate(pad_id: int) -> Any:
    """Collate unpadded rows by padding to the batch's longest (only for padding-invariant models:
    the original pads every row to max_seq_len, and its outputs depend on the padding)."""

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        out: dict[str, torch.Tensor] = {}
        for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
            out[key] = torch.stack([torch.nn.functional.pad(torch.as_tensor(r[key]), (0, n - len(r[key])), value=fill)
                                    for r in rows])
        out["labels"] = torch.stack([torch.as_tensor(r["labels"]) for r in rows])
        out["idx"] = torch.stack([torch.as_tensor(r["idx"]) for r in rows])
        return out

    return collate


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


def evaluate(composer_model: Any, spec: JobSpec, tokenizer_spec: str, device: torch.device, bf16: bool,
             collate_fn: Any = None) -> dict[str, dict[str, float]]:
    """GLUE metrics on every eval split of the task: {split: {metric: value in [0, 1]}}."""
    from m2bert.data.glue import get_task, metric_fns

    t = get_task(spec.task)
    fns = metric_fns()
    out: dict[str, dict[str, float]] = {}
    spec_rows = spec.__dict__.setdefault("_eval_rows", {})
    for split in t.eval_splits:
        ds = task_dataset(t.name, spec.data_source, split, tokenizer_spec, spec.max_seq_len, spec.eval_subset, False,
                          spec.pad_to_max_length)
        p, r = predict(composer_model, ds, spec.eval_batch_size, device, bf16, collate_fn)
        out[split] = {m: float(fns[m](p, r)) for m in t.metrics}
        spec_rows[split] = len(r)
    return out


def run_job(spec: JobSpec, start: Any | None = None) -> dict[str, Any]:
    """Fine-tune from ``start`` (a glue.start.Start; resolved from ``spec.start`` when None) and evaluate."""
    from composer import Trainer
    from composer.algorithms import GradientClipping
    from composer.utils import dist, reproducibility
    from torch.utils.data import DataLoader

    from m2bert.data.glue import get_task
    from m2bert.glue.start import load_classifier, padding_invariant, resolve_start
    from m2bert.train import builders
    from m2bert.options import ConfigError
    from m2bert.train.composer_models import ComposerClassifier
    from m2bert.train.torch_compile import CompileTimer, composer_compile_config
    from omegaconf import OmegaConf

    t0 = time.perf_counter()
    t = get_task(spec.task)
    s = spec.settings
    if start is None:
        st = spec.start
        start = resolve_start(st["kind"], st["path"], st.get("config"), st.get("tokenizer"), st.get("_config_dict"),
                              trust=bool(st.get("trust", False)))
    device, precision = builders.resolve_device_and_precision(spec.device, spec.precision)
    compile_config = composer_compile_config(spec.compile, device, key="compile")
    os.makedirs(spec.out_dir, exist_ok=True)

    if not spec.pad_to_max_length and not padding_invariant(start.config):
        raise ConfigError(f"data.pad_to_max_length=false needs a padding-invariant model; {start.path} is not "
                          "(an original checkpoint reproduces the original, whose outputs depend on padding)")
    train = task_dataset(t.name, spec.data_source, "train", start.tokenizer, spec.max_seq_len,
                         s.get("train_subset") or spec.train_subset, True, spec.pad_to_max_length)
    collate_fn = None if spec.pad_to_max_length else pad_collate(get_tokenizer(start.tokenizer).pad_token_id or 0)
    reproducibility.seed_all(spec.seed)  # the classifier layer's init depends on the seed
    model = load_classifier(start, t.num_labels, s["pooling"], spec.kernels)
    if t.label_names is not None:  # the export's pipeline then answers with GLUE's label names
        model.config.id2label = dict(enumerate(t.label_names))
        model.config.label2id = {name: i for i, name in enumerate(t.label_names)}
    composer_model = ComposerClassifier(model, t.num_labels)
    batch_size = int(s["batch_size"])
    loader = DataLoader(train, batch_size=batch_size, sampler=dist.get_sampler(train, shuffle=True, seed=spec.seed),
                        drop_last=False, num_workers=0, collate_fn=collate_fn)
    optimizer = builders.build_optimizer(model, OmegaConf.create(
        {"name": s["optimizer"], "lr": s["lr"], "betas": spec.betas, "eps": spec.eps, "weight_decay": s["weight_decay"]}))
    scheduler = builders.build_scheduler(OmegaConf.create(
        {"name": "linear_decay_with_warmup", "t_warmup": spec.t_warmup, "alpha_f": spec.alpha_f}))
    log.info("%s round %d: lr %g, wd %g, %s, %s, batch %d, pooling %s, %d train rows, start %s (%s)",
             spec.name, spec.round, s["lr"], s["weight_decay"], s["optimizer"], spec.duration(), batch_size,
             s["pooling"], len(train), start.path, start.kind)
    trainer = Trainer(
        model=composer_model,
        train_dataloader=loader,
        optimizers=optimizer,
        schedulers=scheduler,
        max_duration=spec.duration(),
        algorithms=[GradientClipping(clipping_type="norm", clipping_threshold=spec.grad_clip_norm)] if spec.grad_clip_norm > 0 else [],
        device=device,
        precision=precision,
        device_train_microbatch_size=min(spec.microbatch_size or batch_size, batch_size),
        seed=spec.seed,
        run_name=spec.name,
        progress_bar=False,
        log_to_console=True,
        console_log_interval=spec.console_log_interval,
        loggers=builders.build_loggers(spec.logger or {"name": "console"}, spec.name, group=spec.wandb_group),
        compile_config=compile_config,
        callbacks=[CompileTimer()] if compile_config is not None else [],
    )
    trainer.logger.log_hyperparameters({"glue": spec.hparams or {}, "job": {
        "task": t.name, "seed": spec.seed, "round": spec.round, "settings": dict(s), "start": start.path,
        "max_duration": spec.duration()}})
    trainer.fit()
    train_time = time.perf_counter() - t0
    dev = torch.device("cuda") if device == "gpu" else torch.device("cpu")
    metrics = evaluate(composer_model, spec, start.tokenizer, dev, precision == "amp_bf16", collate_fn)
    result: dict[str, Any] = {
        "task": t.name, "seed": spec.seed, "round": spec.round, "metrics": metrics,
        "time_s": round(time.perf_counter() - t0, 2), "train_time_s": round(train_time, 2),
        "batches": int(trainer.state.timestamp.batch), "train_rows": len(train),
        "eval_rows": dict(spec.__dict__.get("_eval_rows", {})),
        "start": {"kind": start.kind, "path": start.path}, "settings": dict(s), "final_model": None,
    }
    if spec.save_final:
        result["final_model"] = builders.atomic_save_pretrained(model, get_tokenizer(start.tokenizer),
                                                                os.path.join(spec.out_dir, "final"),
                                                                card=glue_card(spec, t, start, result))
    trainer.close()
    atomic_write_json(os.path.join(spec.out_dir, "result.json"), result)
    log.info("%s: %s (%.1f s)", spec.name, format_metrics(metrics), result["time_s"])
    return result


def glue_card(spec: JobSpec, task: Any, start: Any, result: dict[str, Any]) -> str:
    """The fine-tuned export's README.md: task, start, recipe, dev-set metrics."""
    from m2bert.train.model_card import model_card

    s = spec.settings
    training = {
        "task": f"{task.name} ({'regression' if task.is_regression else f'{task.num_labels} classes'})",
        "started from": f"{start.path} ({start.kind})", "data": spec.data_source, "seed": spec.seed,
        "steps": f"{result['batches']} batches of {s['batch_size']} ({spec.duration()}, {result['train_rows']} rows)",
        "optimizer": f"{s['optimizer']}, lr {s['lr']}, weight decay {s['weight_decay']}", "pooling": s["pooling"],
        "max sequence length": spec.max_seq_len,
    }
    evals = {f"{split} {name}": f"{value:.4f}" for split, values in result["metrics"].items()
             for name, value in values.items()}
    labels = dict(enumerate(task.label_names)) if task.label_names is not None else None
    return model_card(f"{task.name}-seed{spec.seed}: M2-BERT fine-tuned on {task.name}",
                      "A sequence classifier fine-tuned with m2bert-glue (the GLUE driver).", training,
                      "AutoModelForSequenceClassification", evals, labels)


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{split if len(metrics) > 1 else ''}{'/' if len(metrics) > 1 else ''}{m} {100 * v:.2f}"
                     for split, ms in metrics.items() for m, v in ms.items())


def save_spec(spec: JobSpec, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(asdict(spec), f, indent=2)


def main(argv: list[str] | None = None) -> int:
    """Worker: run the job in ``spec.json``; the result lands in ``<out_dir>/result.json``."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with open(argv[0]) as f:
        spec = JobSpec(**json.load(f))
    run_job(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
