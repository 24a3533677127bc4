"""The structured schema every Hydra config is merged onto.

Hydra merges the YAML tree onto these dataclasses in struct mode, so an unknown or
misspelled key, or a value of the wrong type, stops the run at start-up with the key's
full name. Each group (model/, data/, optimizer/, scheduler/, parallel/, impl/, logger/)
holds one user decision; ``impl`` holds the speed-only switches, apart from model semantics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

MODEL_FAMILIES = ("m2", "bert")
OPTIMIZERS = ("decoupled_adamw", "adamw")
SCHEDULERS = ("linear_decay_with_warmup", "constant_with_warmup")
PARALLEL = ("ddp", "fsdp")
PRECISIONS = ("auto", "fp32", "amp_bf16", "amp_fp16")


@dataclass
class ModelConfig:
    family: str = MISSING  # m2 | bert (the Transformer baseline, transformers' BertForMaskedLM)
    preset: str = MISSING  # an M2BertConfig preset, or bert-base / bert-tiny
    overrides: dict[str, Any] = field(default_factory=dict)  # any field of the model config


@dataclass
class DataConfig:
    name: str = MISSING
    local: str = MISSING  # MDS folder (or local cache for `remote`)
    remote: Optional[str] = None  # e.g. s3://bucket/c4-mds
    train_split: str = "train"
    eval_split: str = "val"
    tokenizer: str = "bert-base-uncased"  # a Hugging Face id or a local directory
    max_seq_len: int = 128
    mlm_probability: float = 0.30
    eval_mlm_probability: float = 0.15
    num_workers: int = 0
    validate_hash: Optional[str] = None  # sha1 | xxh64: check every shard's hash against index.json at start-up


@dataclass
class OptimizerConfig:
    name: str = "decoupled_adamw"
    lr: float = 8e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 1e-5


@dataclass
class SchedulerConfig:
    name: str = "linear_decay_with_warmup"
    t_warmup: str = "0.06dur"
    alpha_f: float = 0.02


@dataclass
class ParallelConfig:
    name: str = "ddp"
    fsdp: dict[str, Any] = field(default_factory=dict)  # passed to Composer's parallelism_config


@dataclass
class ImplConfig:
    """Speed-only switches: results are the same (to numerical precision) whatever they are."""

    kernels: str = "auto"  # auto | triton | torch
    compile: str = "auto"  # auto (on for CUDA, off on CPU) | true | false: torch.compile (m2bert.train.torch_compile)
    long_conv_impl: str = "fft"  # fft | monarch | direct
    device_train_microbatch_size: int = 128


@dataclass
class LoggerConfig:
    name: str = "console"  # console | wandb
    project: Optional[str] = None
    entity: Optional[str] = None
    mode: Optional[str] = None  # e.g. offline


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    impl: ImplConfig = field(default_factory=ImplConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run_name: str = "${m2bert_run_name:}"  # default: m2bert-pretrain-<YYYYmmdd-HHMMSS> (m2bert.train.runs)
    run_root: str = "runs"
    seed: int = 17
    global_train_batch_size: int = 4096
    device_eval_batch_size: int = 128
    max_duration: str = "286720000sp"
    eval_interval: str = "2000ba"
    eval_subset_num_batches: int = -1
    eval_at_start: bool = False  # evaluate once before training (the demo prints first vs last loss)
    precision: str = "auto"  # amp_bf16 on GPU, fp32 on CPU
    grad_clip_norm: float = 1.0
    save_folder: Optional[str] = None  # default: <run_root>/<run_name>/checkpoints
    save_interval: str = "3500ba"
    save_num_checkpoints_to_keep: int = 1
    autoresume: bool = False  # continue from the newest complete checkpoint in save_folder
    overwrite: bool = False  # replace the checkpoints already in save_folder (otherwise refused)
    load_path: Optional[str] = None
    trust_checkpoint: bool = False  # skip the weights-only check of load_path / autoresume files (trusted files only)
    export_hf: bool = True
    progress_bar: bool = False
    console_log_interval: str = "100ba"
    device: str = "auto"  # auto | cpu | gpu


def register() -> None:
    from m2bert.train.runs import register_resolver

    register_resolver()
    ConfigStore.instance().store(name="pretrain_schema", node=PretrainConfig)
