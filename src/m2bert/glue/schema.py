"""Structured schema of ``yamls/glue.yaml``: Hydra merges the YAML onto it in struct mode, so a misspelled
key (``glue.rte.lrr``), an unknown task section or a wrongly typed value stops the run at start-up.

Task sections are keyed by our task name with ``-`` replaced by ``_`` (``glue.sample_pair``), because a
dataclass field cannot hold a dash; ``tasks=[sample-pair]`` and ``tasks=[sample_pair]`` both work.

The driver turns the composed config into these dataclasses once (``to_glue_config``) and hands them on as
they are, down to the optimizer; a key Hydra's ``+key=value`` slipped past the schema stops it there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from m2bert.options import (
    ConfigError,
    Execution,
    FilterDecay,
    Kernels,
    Optimizer,
    Pooling,
    SaveFinal,
    Scheduler,
    StartFrom,
    StartKind,
    unknown_keys,
)
from m2bert.train.schema import LoggerConfig


@dataclass
class TaskSettings:
    """One task's fine-tuning recipe. ``num_labels`` comes from the task table (m2bert.data.glue_tasks)."""

    seeds: list[int] = field(default_factory=lambda: [19])
    lr: float = 5e-5
    weight_decay: float = 5e-6
    optimizer: Optimizer = Optimizer.decoupled_adamw
    epochs: int = 3
    max_duration: Optional[str] = None  # a Composer time string ("10ba", "2ep"); overrides epochs
    batch_size: int = 32
    pooling: Pooling = Pooling.cls  # mean: the original's pool_all
    start_from: StartFrom = StartFrom.pretrained  # mnli: the chain source (``chain.source_task``, whatever it is)
    train_subset: Optional[int] = None  # first N rows of a fixed shuffle of train; overrides the global one


@dataclass
class OptimizerShared:
    """Settings shared by every task's optimizer (the original's, fixed across tasks)."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    filter_decay: FilterDecay = FilterDecay.original  # M2's implicit filters (m2bert.options.FilterDecay)


@dataclass
class SchedulerShared:
    name: Scheduler = Scheduler.linear_decay_with_warmup  # m2bert.train.builders.build_scheduler
    t_warmup: str = "0.06dur"
    alpha_f: float = 0.0  # decay to 0


@dataclass
class GlueRecipe:
    """A model size's recipe (the ``glue/`` group): published row to compare with, and per-task settings."""

    model_size: str = MISSING  # key of published.json's glue_dev, e.g. m2-bert-base-80m
    optimizer: OptimizerShared = field(default_factory=OptimizerShared)
    scheduler: SchedulerShared = field(default_factory=SchedulerShared)
    mnli: Optional[TaskSettings] = None
    qnli: Optional[TaskSettings] = None
    qqp: Optional[TaskSettings] = None
    rte: Optional[TaskSettings] = None
    sst2: Optional[TaskSettings] = None
    mrpc: Optional[TaskSettings] = None
    stsb: Optional[TaskSettings] = None
    cola: Optional[TaskSettings] = None
    wnli: Optional[TaskSettings] = None
    sample_ss: Optional[TaskSettings] = None
    sample_pair: Optional[TaskSettings] = None


@dataclass
class StartConfig:
    """The starting checkpoint. ``config``/``tokenizer`` default to what sits beside it (see glue.start)."""

    kind: StartKind = StartKind.hf
    path: str = MISSING
    config: Optional[str] = None  # HF dir / config.json; for original: a JSON or a .pt holding io['config']
    tokenizer: Optional[str] = None  # tokenizer dir, vocab.txt or hub id
    trust_checkpoint: bool = False  # true: unpickle a composer start without the safety check (trusted files only)


@dataclass
class DataConfig:
    source: str = "hf"  # "hf" (the hub) or a folder with <TASK>/train.tsv, dev.tsv…
    max_seq_len: int = 128
    # true: every row padded to max_seq_len, as the original (its outputs depend on padding). false: pad
    # to each batch's longest row (faster; only for padding-invariant models, i.e. ours, not original ones)
    pad_to_max_length: bool = True


@dataclass
class ChainConfig:
    """Round 2 (tasks with start_from: mnli) starts from the source task's first seed's final model."""

    source_task: str = "mnli"
    enabled: bool = True  # false: every task starts from the pretrained checkpoint
    checkpoint: Optional[str] = None  # an existing fine-tuned source model (HF dir): skip running the source


@dataclass
class ImplConfig:
    """Speed-only switches, by the names pretraining gives them (``impl.kernels``, ``impl.compile``)."""

    kernels: Kernels = Kernels.auto
    compile: str = "auto"  # auto = on for CUDA, off on CPU | true | false (a str: Hydra reads true as a bool)


@dataclass
class GlueConfig:
    glue: GlueRecipe = field(default_factory=GlueRecipe)
    start: StartConfig = field(default_factory=StartConfig)
    data: DataConfig = field(default_factory=DataConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # console | wandb, as in pretraining
    tasks: list[str] = field(default_factory=lambda: ["mnli", "qnli", "qqp", "rte", "sst2", "mrpc", "stsb", "cola"])
    train_subset: Optional[int] = None  # rows per task (tests, demo); null = the full training set
    eval_subset: Optional[int] = None  # rows per dev set; null = full dev sets (what GLUE reports)
    max_duration: Optional[str] = None  # overrides every task's duration (tests, demo), e.g. "4ba"
    run_root: str = "runs"
    run_name: str = "glue"
    run_dir: Optional[str] = None  # default <run_root>/<run_name>; a Hydra multirun job uses its own dir
    resume: bool = False  # continue the earlier run in the run folder: finished jobs with the same spec are reused
    overwrite: bool = False  # delete the earlier run in the run folder first (otherwise such a folder is refused)
    device: str = "auto"  # auto | cpu | gpu
    precision: str = "auto"  # amp_bf16 on GPU, fp32 on CPU
    gpus: Optional[list[int]] = None  # GPU ids for the job queue; null = all visible GPUs
    execution: Execution = Execution.auto  # auto (the GPU queue when >1 GPU id, else serial) | serial | queue
    device_eval_batch_size: int = 128
    device_train_microbatch_size: Optional[int] = None  # null = the task's batch size
    grad_clip_norm: float = 0.0  # the original's GLUE jobs do not clip
    save_final: SaveFinal = SaveFinal.chain  # chain (only the chain source's first seed) | all | none
    console_log_interval: str = "50ba"  # ep or ba only: a progress line every N batches or epochs
    published: Optional[str] = None  # a published.json to compare with; default: the copy inside the package
    plot: bool = True
    impl: ImplConfig = field(default_factory=ImplConfig)


def register() -> None:
    ConfigStore.instance().store(name="glue_schema", node=GlueConfig)


def to_glue_config(cfg: DictConfig) -> GlueConfig:
    """The composed config as the schema's dataclasses; a key the schema lacks is one ConfigError naming it."""
    unknown = unknown_keys(cfg, GlueConfig)
    if unknown:
        raise ConfigError(f"{'; '.join(unknown)}: no such GLUE setting; the settings and their values: "
                          "m2bert-glue --cfg job")
    config: Any = OmegaConf.to_object(cfg)
    return config
