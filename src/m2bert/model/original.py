"""Loading checkpoints of the original M2-BERT implementation (HazyResearch/m2).

Its Composer checkpoints hold ``state.model`` with ``model.bert.*`` / ``model.cls.*`` keys.
Every original key maps onto one of our clean names; a few original keys are aliases of one
tensor (the Sin frequency shared by all six activations of a filter, the decoder weight
tied to the word embeddings) and ``position_ids`` is a constant we do not store.
"""
from __future__ import annotations

import copy
import logging
import os
import pickle
import re
from typing import Any, TypeVar

import torch

from m2bert.config import M2BertConfig

log = logging.getLogger(__name__)

_FILTER_LINEAR = {"0": "0", "2": "1", "4": "2", "6": "3"}
_FILTER_FREQ = {"1", "3", "5"}

# (pattern on the original key without "model.", replacement function) in order.
_LAYER = r"bert\.encoder\.layer\.(\d+)\."


def original_to_ours(key: str) -> str | None:
    """Our parameter name for an original key; None for keys we deliberately drop."""
    k = key[len("model."):] if key.startswith("model.") else key
    if k == "bert.embeddings.position_ids":
        return None
    if k.startswith("bert.embeddings."):
        return k.replace(".LayerNorm.", ".norm.")
    m = re.match(_LAYER + r"(attention|mlp)\.(.*)$", k)
    if m:
        layer, block, rest = m.groups()
        if block == "mlp":
            return f"bert.layers.{layer}.dimension_mixer." + rest.replace("layernorm.", "norm.")
        prefix = f"bert.layers.{layer}.sequence_mixer."
        f = re.match(r"(filter_fn2?)\.(.*)$", rest)
        if not f:
            return prefix + rest.replace("short_filter.", "short_conv.").replace("layernorm.", "norm.")
        module = "long_conv" if f.group(1) == "filter_fn" else "residual_long_conv"
        return prefix + module + "." + _filter_key(f.group(2), key)
    if k.startswith("cls.predictions.transform."):
        return "mlm_head." + k[len("cls.predictions.transform."):].replace("LayerNorm.", "norm.")
    if k.startswith("cls.predictions.decoder."):
        return "mlm_head." + k[len("cls.predictions."):]
    if k.startswith("bert.pooler.dense."):
        return "head.pooler." + k[len("bert.pooler.dense."):]
    if k.startswith("classifier."):
        return "head." + k
    raise KeyError(key)


def _filter_key(rest: str, key: str) -> str:
    if rest in ("bias",):
        return rest
    if rest.startswith("pos_emb."):
        return rest[len("pos_emb."):]  # z, t
    if rest == "modulation.deltas":
        return "deltas"
    m = re.match(r"implicit_filter(_rev)?\.(\d+)\.(weight|bias|freq)$", rest)
    if m:
        mlp, idx, name = m.groups()
        if name == "freq" and idx in _FILTER_FREQ:
            return "freq"
        if idx in _FILTER_LINEAR and name != "freq":
            return f"mlp_{'rev' if mlp else 'fwd'}.{_FILTER_LINEAR[idx]}.{name}"
    raise KeyError(key)


def read_original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of an original checkpoint, loaded with ``weights_only=True``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"original checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"original checkpoint is empty: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(
            f"cannot read {path} as a weights-only torch checkpoint ({type(e).__name__}: {str(e)[:300]}). "
            "Only tensors and plain containers are accepted; re-save the model state dict alone if the file "
            "holds other objects."
        ) from e
    state = ckpt
    if isinstance(ckpt, dict) and "state" in ckpt:
        state = ckpt["state"].get("model", ckpt["state"])
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no model state dict (expected state.model with model.bert.* keys)")
    return state


M = TypeVar("M")


def load_original_checkpoint(cls: type[M], path: str | os.PathLike, config: M2BertConfig | dict[str, Any]) -> M:
    """Build ``cls`` from an original checkpoint; unknown or missing keys are an error that lists them."""
    if isinstance(config, dict):
        config = M2BertConfig.from_original(config)
    else:
        config = copy.deepcopy(config)  # the caller's config stays as it was
    config.padding_invariant = False  # reproduce the original exactly
    state = read_original_state_dict(path)
    model = cls(config)  # type: ignore[call-arg]
    ours = model.state_dict()  # type: ignore[attr-defined]

    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        try:
            name = original_to_ours(key)
        except KeyError:
            unknown.append(key)
            continue
        if name is None:
            continue
        if name not in ours:
            # An MLM head in a classifier or vice versa: a head the target model does not have.
            if name.startswith(("mlm_head.", "head.")):
                log.info("skipping %s: %s has no such head", key, cls.__name__)
                continue
            unknown.append(key)
            continue
        if tuple(ours[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"shape mismatch for {key} -> {name}: checkpoint {tuple(tensor.shape)}, model {tuple(ours[name].shape)}; "
                "is the config the one this checkpoint was trained with?"
            )
        if name in mapped and not torch.equal(mapped[name], tensor):
            raise ValueError(f"{key} should alias {name} but holds different values")
        mapped[name] = tensor
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    fresh_head = {n for n in ours if n.startswith("head.")} if not any(n.startswith("head.") for n in mapped) else set()
    missing = sorted(set(ours) - set(mapped) - tied - fresh_head)
    if unknown or missing:
        raise ValueError(
            f"checkpoint {path} does not match {cls.__name__}: "
            f"unknown keys {unknown[:20]}{' …' if len(unknown) > 20 else ''}; "
            f"missing keys {missing[:20]}{' …' if len(missing) > 20 else ''}"
        )
    if fresh_head:
        log.info("%s: classification head initialised fresh (checkpoint has none)", cls.__name__)
    model.load_state_dict(mapped, strict=False)  # type: ignore[attr-defined]
    if tied:
        model.tie_weights()  # type: ignore[attr-defined]
    return model
