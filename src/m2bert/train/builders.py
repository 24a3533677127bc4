"""Builders shared by the entry points: model, optimizer, scheduler, callbacks, loggers."""
from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from m2bert.atomic import atomic_directory
from m2bert.config import M2BertConfig, max_input_length
from m2bert.model.param_groups import param_groups
from m2bert.options import ConfigError

log = logging.getLogger(__name__)

BERT_PRESETS: dict[str, dict[str, Any]] = {
    "bert-base": {},  # transformers' BertConfig defaults are bert-base
    "bert-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    # m2-bert-small's width and depth (the CPU quality study's baseline)
    "bert-small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
}


def vocab_size_for(tokenizer_len: int, overrides: dict[str, Any]) -> int:
    """The tokenizer's size padded to a multiple of 8 (30522 → 30528), unless overridden."""
    if "vocab_size" in overrides:
        size = int(overrides["vocab_size"])
        if size < tokenizer_len:
            raise ConfigError(f"model.overrides.vocab_size={size} is smaller than the tokenizer's {tokenizer_len} tokens")
        return size
    return int(math.ceil(tokenizer_len / 8) * 8)


def build_mlm_model(model_cfg: DictConfig, impl_cfg: DictConfig, tokenizer_len: int, max_seq_len: int) -> nn.Module:
    """An M2BertForMaskedLM or, for the baseline, transformers' BertForMaskedLM (SDPA attention) with the same
    training contract (``BertBaselineForMaskedLM``: given labels, both decode only the masked positions)."""
    overrides = dict(OmegaConf.to_container(model_cfg.overrides, resolve=True) or {})
    vocab = vocab_size_for(tokenizer_len, overrides)
    overrides["vocab_size"] = vocab
    if model_cfg.family == "m2":
        from m2bert import M2BertForMaskedLM

        overrides.update(kernels=str(impl_cfg.kernels), long_conv_impl=str(impl_cfg.long_conv_impl))
        try:
            config = M2BertConfig.from_preset(model_cfg.preset, **overrides)
            if max_seq_len > max_input_length(config) and "max_length" not in overrides:
                # Longer data than the preset's length lengthens its position table and filters (fields set in
                # overrides still win; a model left too short is refused below).
                config = M2BertConfig.from_preset(model_cfg.preset, **{"max_length": max_seq_len, **overrides})
        except ValueError as e:
            raise ConfigError(f"model: {e}") from e
        if max_seq_len > max_input_length(config):
            raise ConfigError(f"data.max_seq_len={max_seq_len} exceeds the model's length {max_input_length(config)} "
                              f"(long_conv_l_max={config.long_conv_l_max}, "
                              f"max_position_embeddings={config.max_position_embeddings})")
        return M2BertForMaskedLM(config)
    if model_cfg.family == "bert":
        from transformers import BertConfig

        from m2bert.model.bert_baseline import BertBaselineForMaskedLM

        if model_cfg.preset not in BERT_PRESETS:
            raise ConfigError(f"model.preset={model_cfg.preset!r}; choose one of {sorted(BERT_PRESETS)}")
        valid = set(BertConfig().to_dict())
        unknown = set(overrides) - valid
        if unknown & set(M2BertConfig().to_dict()):
            raise ConfigError(f"model.overrides {sorted(unknown)} are M2 settings, not BertConfig fields: with model="
                              f"{model_cfg.preset.replace('-', '_')} use filters=original (filters=keep/weak are M2 recipes)")
        if unknown:
            raise ConfigError(f"model.overrides has unknown BertConfig field(s) {sorted(unknown)}")
        fields = {**BERT_PRESETS[model_cfg.preset], **overrides}
        fields.setdefault("max_position_embeddings", max(512, max_seq_len))
        return BertBaselineForMaskedLM(BertConfig(**fields, attn_implementation="sdpa"))
    raise ConfigError(f"model.family={model_cfg.family!r}; choose m2 or bert")


def build_optimizer(model: nn.Module, cfg: DictConfig) -> torch.optim.Optimizer:
    """DecoupledAdamW (the paper's) or AdamW, with the implicit filters' own groups for M2
    (``cfg.filter_decay``: m2bert.options.FilterDecay)."""
    decoupled = cfg.name == "decoupled_adamw"
    if hasattr(model.config, "long_conv_kernel_learning_rate"):
        groups = param_groups(model, decoupled=decoupled, filter_decay=str(getattr(cfg, "filter_decay", None) or "original"))
    else:
        groups = [{"params": list(model.parameters())}]
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "decoupled_adamw":
        from m2bert.train.foreach_adamw import ForeachDecoupledAdamW

        return ForeachDecoupledAdamW(groups, **kwargs)  # Composer's, its update as foreach ops
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    raise ConfigError(f"optimizer.name={cfg.name!r}; choose decoupled_adamw or adamw")


def build_scheduler(cfg: DictConfig) -> Any:
    from composer.optim import ConstantWithWarmupScheduler, LinearWithWarmupScheduler

    if cfg.name == "linear_decay_with_warmup":
        return LinearWithWarmupScheduler(t_warmup=cfg.t_warmup, alpha_f=cfg.alpha_f)
    if cfg.name == "constant_with_warmup":
        return ConstantWithWarmupScheduler(t_warmup=cfg.t_warmup, alpha=cfg.alpha_f)  # the level after warm-up
    raise ConfigError(f"scheduler.name={cfg.name!r}; choose linear_decay_with_warmup or constant_with_warmup")


def resolve_device_and_precision(device: str, precision: str) -> tuple[str, str]:
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    if precision == "auto":
        precision = "amp_bf16" if device == "gpu" else "fp32"
    if device == "cpu" and precision != "fp32":
        raise ConfigError(f"precision={precision} needs a GPU; use precision=fp32 (or auto) on CPU")
    return device, precision


def build_callbacks(device: str) -> list[Any]:
    from composer.callbacks import LRMonitor, MemoryMonitor, RuntimeEstimator, SpeedMonitor

    # RuntimeEstimator logs time/remaining_estimate (hours left) with the other metrics.
    callbacks: list[Any] = [SpeedMonitor(window_size=10), LRMonitor(), RuntimeEstimator()]
    if device == "gpu":
        callbacks.append(MemoryMonitor())
    return callbacks


def build_loggers(cfg: DictConfig | dict[str, Any], run_name: str, group: str | None = None) -> list[Any]:
    """Composer loggers for ``logger=console|wandb``; ``group`` gathers runs (a GLUE run's jobs) in W&B."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    if cfg.name == "console":
        return []
    if cfg.name == "wandb":
        from composer.loggers import WandBLogger

        if cfg.mode:
            os.environ["WANDB_MODE"] = cfg.mode
        return [WandBLogger(project=cfg.project, entity=cfg.entity, name=run_name, group=group)]
    raise ConfigError(f"logger.name={cfg.name!r}; choose console or wandb")


def duration_in_batches(max_duration: str, global_batch_size: int) -> str:
    """``286720000sp`` with 4096 sequences a batch → ``70000ba``: the same run, but Composer's console line
    then shows ``[batch=N/70000]`` (with samples it shows samples). Other units are returned unchanged."""
    from composer.core import Time, TimeUnit

    t = Time.from_timestring(str(max_duration))
    if t.unit == TimeUnit.SAMPLE and t.value % global_batch_size == 0:
        return f"{t.value // global_batch_size}ba"
    return str(max_duration)


def tied_parameter_names(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that are one tensor (the decoder tied to the word embeddings), read before
    FSDP wraps the model: a gathered state dict holds them as copies, which the export must tie again."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def gather_full_state_dict(composer_model: nn.Module, tied: list[list[str]]) -> dict[str, torch.Tensor]:
    """The wrapped model's full weights on rank 0 (empty elsewhere), under its own names. FSDP shards the
    weights, so ``save_pretrained`` on one rank would fail (FSDP2's DTensors) or write a shard: every rank
    must call this, as it gathers the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(composer_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    state = {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
    for names in tied:
        if names[0] in state:
            state.update({name: state[names[0]] for name in names[1:]})
    return state


def atomic_save_pretrained(model: nn.Module, tokenizer: Any, out_dir: str, card: str | None = None,
                           state_dict: dict[str, torch.Tensor] | None = None) -> str:
    """save_pretrained (config + safetensors + tokenizer, and ``card`` as README.md: see
    ``m2bert.train.model_card``), never leaving a half-written export. ``state_dict``: the weights to
    write instead of the model's own (``gather_full_state_dict`` under FSDP). The tokenizer's
    ``model_max_length`` is the model's longest input, so ``truncation=True`` stops there."""
    from m2bert.data.tokenizer import set_model_max_length

    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
            set_model_max_length(tmp, max_input_length(model.config))
        if card is not None:
            with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
                f.write(card)
    return out_dir
