"""What every configuration shares: the start-up error type and the allowed values of each choice.

A ``ConfigError`` is a user's configuration problem found before heavy work starts; the CLIs print it as
one line and exit 2 (``m2bert.cli``).

Each choice is defined once, here, as an ``Enum`` whose member names are the command-line strings. The
structured schemas (``m2bert.train.schema``, ``m2bert.glue.schema``) type their fields with these, so
OmegaConf refuses any other value while Hydra composes the config (OmegaConf 2.3 refuses ``Literal``
annotations outright, but validates ``Enum`` fields: a value is accepted by its member name), and
``m2bert.config`` checks model fields against the same definitions (:func:`choices`).
"""
from __future__ import annotations

import difflib
import types
import typing
from dataclasses import asdict, is_dataclass
from enum import Enum
from typing import Any


class ConfigError(ValueError):
    """A configuration problem found at start-up, before any heavy work."""


class Choice(str, Enum):
    """A value out of a fixed set that compares, prints and serialises (JSON) as its plain string, so code
    downstream of the config sees ``"auto"`` whether it got the member or the string."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Kernels(Choice):
    """The fused Triton kernels: ``auto`` = on CUDA when they pass their self-check, PyTorch elsewhere."""

    auto = "auto"
    triton = "triton"
    torch = "torch"


class LongConvImpl(Choice):
    """How the long convolution is computed (m2bert.model.long_conv); all give the same result. ``auto``: the
    fastest form for the device and length, from a measured table (``long_conv.AUTO_FORMS``)."""

    fft = "fft"
    monarch = "monarch"
    direct = "direct"
    auto = "auto"


class Pooling(Choice):
    """The sequence representation a classifier reads: the [CLS] token, or the mean (the original's pool_all)."""

    cls = "cls"
    mean = "mean"


class ModelFamily(Choice):
    """M2-BERT, or the Transformer baseline (transformers' BERT)."""

    m2 = "m2"
    bert = "bert"


class FilterDecay(Choice):
    """How the optimizer groups and decays the implicit filters (``m2bert.model.param_groups``).

    ``original``: the original's groups exactly (HazyResearch/m2 ``bert/src/mm/hyena_utils.py`` tags the forward
    filter MLP and the shared sine ``freq``; ``bert/src/optim/create_param_groups.py`` makes them a group): lr
    ``long_conv_kernel_learning_rate``, weight decay ``hyena_wd`` handed to the optimizer as is, which under
    DecoupledAdamW multiplies them by 1 - 0.1 every step at the peak lr; the reverse MLP trains in the default
    group. Measured: the filters collapse (~1e-15 within 150 steps) and M2 mixes tokens through its 3-tap
    causal short convolutions only (README, "The filters' recipe").
    ``weak``: both filter MLPs and ``freq`` in the filter group, decayed per step by lr·hyena_wd (1e-4): the
    filters stay large, and small M2 stays on the MLM plateau longer than BERT.
    """

    original = "original"
    weak = "weak"


class Optimizer(Choice):
    decoupled_adamw = "decoupled_adamw"
    adamw = "adamw"


class Scheduler(Choice):
    linear_decay_with_warmup = "linear_decay_with_warmup"
    constant_with_warmup = "constant_with_warmup"


class Parallel(Choice):
    ddp = "ddp"
    fsdp = "fsdp"


class RetrievalSchedule(Choice):
    """The learning-rate schedule of retrieval fine-tuning (transformers' ``lr_scheduler_type``)."""

    linear = "linear"
    cosine = "cosine"
    constant_with_warmup = "constant_with_warmup"


class StartKind(Choice):
    """A GLUE start: our Hugging Face export, our Composer checkpoint, or an original M2-BERT checkpoint."""

    hf = "hf"
    composer = "composer"
    original = "original"


class StartFrom(Choice):
    """Where a GLUE task starts: the pretrained model, or the chain source task's (MNLI's) first seed."""

    pretrained = "pretrained"
    mnli = "mnli"


class SaveFinal(Choice):
    """Which fine-tuned GLUE models are exported: only the chain source's first seed, all, or none."""

    chain = "chain"
    all = "all"
    none = "none"


class Execution(Choice):
    """How GLUE jobs run: the GPU queue when more than one GPU id (auto), one after another, or the queue."""

    auto = "auto"
    serial = "serial"
    queue = "queue"


# What each value of a choice means, where its name alone does not say it (the one-line refusal lists these).
MEANINGS: dict[type[Choice], dict[str, str]] = {
    SaveFinal: {"chain": "export the chain source's first seed, which RTE/MRPC/STS-B start from",
                "all": "export every job's fine-tuned model",
                "none": "export none, but the chain source's first seed when this run's round 2 needs it"},
}


def described(choice: type[Choice]) -> str:
    """``chain (export only ...), all (...), none (...)``: the allowed values, each with its meaning if it has one."""
    meanings = MEANINGS.get(choice, {})
    return ", ".join(f"{v} ({meanings[v]})" if v in meanings else v for v in choices(choice))


def unknown_keys(cfg: Any, schema: type, prefix: str = "") -> list[str]:
    """Keys of ``cfg`` (a DictConfig) that ``schema`` (a dataclass, walked recursively) does not have.

    Hydra's ``+key=value`` adds a key to a structured config even in struct mode, so a misspelt
    ``+glue.rte.lrr=1e-5`` would otherwise be carried along and never read.
    """
    from omegaconf import DictConfig, OmegaConf

    hints = typing.get_type_hints(schema)
    out: list[str] = []
    for key in cfg.keys():
        name = f"{prefix}{key}"
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            out.append(f"{name} (did you mean {prefix}{close[0]}?)" if close else name)
            continue
        kind = hints[key]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # Optional[X]
            kind = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        if not is_dataclass(kind) or OmegaConf.is_missing(cfg, key):  # values are never read: ??? and ${…} stay as they are
            continue
        value = cfg[key]
        if isinstance(value, DictConfig):
            out += unknown_keys(value, kind, f"{name}.")
    return out


def choices(choice: type[Choice]) -> tuple[str, ...]:
    """The allowed strings of a choice, in definition order: ``choices(Kernels)`` → ``("auto", "triton", "torch")``."""
    return tuple(member.value for member in choice)


def loggable(cfg: Any) -> Any:
    """A config (DictConfig, dataclass, or their plain containers) as loggers take it: every choice as its
    string. ``yaml.dump`` (Composer's console logger, W&B's config file) writes an ``Enum`` member as
    ``!!python/object/apply:m2bert.options.Scheduler`` otherwise; every logged config passes through here."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    elif is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = asdict(cfg)
    if isinstance(cfg, Enum):
        return cfg.value
    if isinstance(cfg, dict):
        return {loggable(key): loggable(value) for key, value in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [loggable(value) for value in cfg]
    return cfg
