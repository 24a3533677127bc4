"""The structured schema every Hydra config is merged onto.

Hydra merges the YAML tree onto these dataclasses in struct mode, so an unknown or
misspelled key, or a value of the wrong type, stops the run at start-up with the key's
full name; so does a value outside a choice (``impl.kernels=fast``): choice fields are typed with the
one definition of their values in ``m2bert.options``. Each group (model/, data/, optimizer/, scheduler/, parallel/, impl/, logger/)
holds one user decision; ``impl`` holds the speed-only switches, apart from model semantics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from m2bert.options import FilterDecay, Kernels, LongConvImpl, ModelFamily, Optimizer, Parallel, Scheduler


@dataclass
class ModelConfig:
    family: ModelFamily = MISSING  # m2 | bert (the Transformer baseline, transformers' BertForMaskedLM)
    preset: str = MISSING  # an M2BertConfig preset, or bert-base / bert-tiny
    # any field of the model config, except the run's switches under impl (impl.kernels, not overrides.kernels)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = MISSING
    local: str = MISSING  # MDS folder (or local cache for `remote`)
    remote: Optional[str] = None  # e.g. s3://bucket/c4-mds
    train_split: str = "train"
    eval_split: Optional[str] = "val"  # null: no held-out split, no evaluation (nor the context-use measurement)
    tokenizer: str = "bert-base-uncased"  # a Hugging Face id or a local directory
    max_seq_len: int = 128
    mlm_probability: float = 0.30
    eval_mlm_probability: float = 0.15
    num_workers: int = 0
    # auto (the cheapest hash index.json holds: xxh64) | xxh64 | sha1 | null (opt out): every shard's hash checked
    # against index.json at start-up, and each compressed shard again as streaming decompresses it
    validate_hash: Optional[str] = "auto"
    # streaming's canonical nodes: the sample order is the same on any number of nodes that divides it (or that it
    # divides); null is streaming's default, the number of nodes of the run, so a run resumed on another node count
    # (or compared with a one-node run) reads another order
    num_canonical_nodes: Optional[int] = None


@dataclass
class OptimizerConfig:
    name: Optimizer = Optimizer.decoupled_adamw
    lr: float = 8e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 1e-5
    # M2's implicit filters: the original's groups and decay (they collapse), or weak decay (README, "The filters'
    # recipe"); their lr and decay coefficient are model fields (long_conv_kernel_learning_rate, hyena_wd).
    filter_decay: FilterDecay = FilterDecay.original


@dataclass
class SchedulerConfig:
    name: Scheduler = Scheduler.linear_decay_with_warmup
    t_warmup: str = "0.06dur"
    alpha_f: float = 0.02  # the LR multiplier at the end (linear decay's target; constant_with_warmup's level)


@dataclass
class ParallelConfig:
    name: Parallel = Parallel.ddp
    fsdp: dict[str, Any] = field(default_factory=dict)  # passed to Composer's parallelism_config


@dataclass
class ImplConfig:
    """Speed-only switches: results are the same (to numerical precision) whatever they are."""

    kernels: Kernels = Kernels.auto
    # auto (on for CUDA, off on CPU) | true | false: torch.compile (m2bert.train.torch_compile). A str, not a
    # choice: Hydra reads impl.compile=true as a bool, which m2bert.train.torch_compile.normalize accepts.
    compile: str = "auto"
    long_conv_impl: LongConvImpl = LongConvImpl.fft
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
    autoresume: bool = False  # continue the run in the run folder, from the newest complete checkpoint in save_folder
    overwrite: bool = False  # delete the earlier run in the run folder (and save_folder's checkpoints) first
    load_path: Optional[str] = None
    trust_checkpoint: bool = False  # hand Composer load_path / the autoresume file unchecked (trusted files only)
    export_hf: bool = True
    # After training: held-out loss with full rows vs 8-token windows vs right context hidden, on this many eval
    # rows (m2bert.train.context_use); 0 = skip.
    context_eval_rows: int = 64
    progress_bar: Optional[bool] = None  # null: Composer's progress bar (with ETA) when stderr is a terminal
    console_log_interval: str = "100ba"  # ep or ba only (what Composer's console logger counts)
    device: str = "auto"  # auto | cpu | gpu


def register() -> None:
    from m2bert.train.runs import register_resolver

    register_resolver()
    ConfigStore.instance().store(name="pretrain_schema", node=PretrainConfig)
