"""Loading checkpoints of the original M2-BERT implementation (HazyResearch/m2).

Its Composer checkpoints hold ``state.model`` with ``model.bert.*`` / ``model.cls.*`` keys. The released
long-context retrieval models (togethercomputer/m2-bert-80M-{2k,8k,32k}-retrieval) are Hugging Face directories
instead: ``config.json`` with the original's fields and ``model.safetensors`` or ``pytorch_model.bin`` whose keys
have no ``model.`` prefix (``bert.embeddings.*``, ``bert.encoder.layer.N.*``, ``bert.pooler.dense.*``).
Every original key maps onto one of our clean names; a few original keys are aliases of one
tensor (the Sin frequency shared by all six activations of a filter, the decoder weight
tied to the word embeddings) and ``position_ids`` is a constant we do not store.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import re
from typing import Any, TypeVar

import torch

from m2bert.config import M2BertConfig
from m2bert.train.checkpoint_safety import check_contents

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
    check_contents(ckpt, path, key=None)
    state = ckpt
    if isinstance(ckpt, dict) and "state" in ckpt:
        state = ckpt["state"].get("model", ckpt["state"])
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no model state dict (expected state.model with model.bert.* keys)")
    return state


# A Hugging Face directory of an original model: the weight files it may hold, in the order they are tried.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_original_directory(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``config.json`` (the original's fields) and the state dict of a Hugging Face directory of an original
    model; safetensors are read with safetensors, a ``.bin`` with ``torch.load(weights_only=True)``."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} not found: an original model directory needs the config.json it "
                                "was released with (or pass config=...)")
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path} is not valid JSON (line {e.lineno}: {e.msg})") from e
    return config, read_directory_weights(path)


def read_directory_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(file, device="cpu")
        return read_original_state_dict(file)
    raise FileNotFoundError(f"{path} holds no weights: expected {' or '.join(WEIGHT_FILES)}")


M = TypeVar("M")


def load_original_checkpoint(cls: type[M], path: str | os.PathLike,
                             config: M2BertConfig | dict[str, Any] | None = None, padding_invariant: bool = False) -> M:
    """Build ``cls`` from an original checkpoint (a Composer ``.pt`` file, or a Hugging Face directory whose
    ``config.json`` is used when ``config`` is None); unknown or missing keys are an error that lists them.

    ``padding_invariant=False`` (default) reproduces the original exactly, padding leaking into real tokens as
    there (the retrieval models were run padded to their full length); True gives our padding-invariant outputs.
    ``cls`` may be the bare encoder (``M2BertModel``): heads in the checkpoint are then skipped (logged)."""
    if os.path.isdir(path):
        dir_config, state = read_original_directory(path) if config is None else ({}, read_directory_weights(path))
        config = dir_config if config is None else config
    else:
        if config is None:
            raise ValueError(f"config is required for the checkpoint file {path}: pass the original config dict "
                             "(or an M2BertConfig)")
        state = read_original_state_dict(path)
    if isinstance(config, dict):
        config = M2BertConfig.from_original(config)
    else:
        config = copy.deepcopy(config)  # the caller's config stays as it was
    config.padding_invariant = padding_invariant
    model = cls(config)  # type: ignore[call-arg]
    ours = model.state_dict()  # type: ignore[attr-defined]
    # The bare encoder's names lack the task models' "bert." prefix.
    encoder_only = not hasattr(model, "bert")

    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    skipped: list[str] = []
    for key, tensor in state.items():
        try:
            name = original_to_ours(key)
        except KeyError:
            unknown.append(key)
            continue
        if name is None:
            continue
        targets = [name]
        if name.startswith("head.pooler."):
            # The original's BertPooler: the classifier's pooler, and the sentence embedding's (embedding_pooler).
            targets.append("bert.pooler." + name[len("head.pooler."):])
        if encoder_only:
            targets = [t[len("bert."):] for t in targets if t.startswith("bert.")]
        targets = [t for t in targets if t in ours]
        if not targets:
            # An MLM head in a classifier or vice versa (or any head in the bare encoder): a head the target lacks.
            if name.startswith(("mlm_head.", "head.", "bert.pooler.")):
                skipped.append(key)
                continue
            unknown.append(key)
            continue
        for target in targets:
            if tuple(ours[target].shape) != tuple(tensor.shape):
                raise ValueError(
                    f"shape mismatch for {key} -> {target}: checkpoint {tuple(tensor.shape)}, model "
                    f"{tuple(ours[target].shape)}; is the config the one this checkpoint was trained with?"
                )
            if target in mapped and not torch.equal(mapped[target], tensor):
                raise ValueError(f"{key} should alias {target} but holds different values")
            mapped[target] = tensor
    if skipped:
        log.info("%s: skipped %d checkpoint tensor(s) of heads it does not have (%s%s)", cls.__name__, len(skipped),
                 ", ".join(skipped[:4]), " …" if len(skipped) > 4 else "")
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    # No classifier in the checkpoint (an MLM, or a retrieval model with only its pooler): a fresh head.
    fresh_head = set()
    if not any(n.startswith("head.classifier.") for n in mapped):
        fresh_head = {n for n in ours if n.startswith("head.") and n not in mapped}
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
