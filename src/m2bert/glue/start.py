"""Starting checkpoints for fine-tuning: resolve, validate and load them before any training starts.

Three kinds, each ending as an M2BertForSequenceClassification whose encoder (and, where present,
pooler) comes from the checkpoint and whose classifier layer is fresh:

* ``hf``: a Hugging Face directory of ours (``save_pretrained``; an MLM export of m2bert-pretrain or
  a fine-tuned classifier such as the chain's MNLI model). Tokenizer: the directory's own.
* ``composer``: a Composer checkpoint of ours (a ``.pt`` file or its folder, newest ``*.pt``). The model
  config and tokenizer come from ``start.config``/``start.tokenizer`` or the pretraining run's ``hf/``
  export beside the checkpoint folder (``<run>/checkpoints/x.pt`` → ``<run>/hf``).
* ``original``: an original M2-BERT (HazyResearch/m2) checkpoint plus its config dict
  (``start.config``: a JSON file, or a ``.pt`` holding ``{'config': ...}``); tokenizer from
  ``start.tokenizer`` (the original used bert-base-uncased).

The classifier layer is always re-initialised (its label count differs between tasks); the pooler is
kept, as the original does when it loads the MNLI checkpoint for RTE, MRPC and STS-B
(Composer ``load_ignore_keys`` on the classifier only).

An ``hf`` start may also be the Transformer baseline (a transformers ``BertForMaskedLM`` export of
``m2bert-pretrain model=bert_*``): it fine-tunes as ``BertForSequenceClassification`` through the same
jobs, so M2 and BERT are compared by one driver.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import BertConfig, PretrainedConfig

from m2bert import object_store
from m2bert.config import M2BertConfig, check_sizes
from m2bert.glue.schema import StartConfig
from m2bert.options import ConfigError
from m2bert.train.checkpoint_safety import check_contents, check_shapes, load_checkpoint_safely, warn_trusted

log = logging.getLogger(__name__)

# Never carried over from a start: task-specific classifiers and MLM heads (ours, then transformers' BERT).
_DROP_PREFIXES = ("head.classifier.", "mlm_head.", "classifier.", "cls.")
_CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {M2BertConfig.model_type: M2BertConfig, "bert": BertConfig}


def config_from_dict(d: dict[str, Any], where: str = "config") -> PretrainedConfig:
    """An M2-BERT or (the baseline) BERT config, by the dict's ``model_type``."""
    cls = _CONFIG_CLASSES.get(d.get("model_type", M2BertConfig.model_type))
    if cls is None:
        raise ConfigError(f"start: {where} is a {d.get('model_type')!r} config; m2bert fine-tunes "
                          f"{' or '.join(sorted(_CONFIG_CLASSES))} models")
    try:
        check_sizes(d)  # BertConfig does not check them (M2BertConfig.validate does)
        return cls.from_dict(d)
    except ValueError as e:
        raise ConfigError(f"start: {where}: {e}") from None


def is_m2(config: PretrainedConfig) -> bool:
    return isinstance(config, M2BertConfig)


def padding_invariant(config: PretrainedConfig) -> bool:
    """BERT masks padded keys in attention, so it is; M2 is unless it reproduces the original."""
    return bool(getattr(config, "padding_invariant", True))


@dataclass
class Start:
    """A validated starting point: where it is, its model config, its tokenizer and its weights."""

    kind: str
    path: str
    config: PretrainedConfig  # M2BertConfig, or BertConfig for the baseline
    tokenizer: str
    state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    trust: bool = False  # start.trust_checkpoint: unpickle a Composer checkpoint without the safety check
    config_path: str | None = None  # start.config as given (None: found beside the checkpoint)
    weights: tuple[str, ...] = ()  # the file(s) the weights were read from (what sha256 identifies)

    def sha256(self) -> str:
        """The sha256 of the weights file(s): a resumed GLUE job is reused only if it started from these bytes."""
        return weights_sha256(self.weights)

    def spec(self) -> StartConfig:
        """What a job (or a worker process) needs to resolve the same start again."""
        return StartConfig(kind=self.kind, path=self.path, config=self.config_path, tokenizer=self.tokenizer,
                           trust_checkpoint=self.trust)


_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes, cached per (path, size, mtime) within the process."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _hashes[key] = h.hexdigest()
    return _hashes[key]


def weights_sha256(files: tuple[str, ...]) -> str:
    """A file's sha256; for several files, the sha256 of their hashes in order."""
    hashes = [file_sha256(f) for f in files]
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()


def check_padding(start: Start, pad_to_max_length: bool) -> None:
    """Padding to each batch's longest row changes the outputs of a model that is not padding-invariant."""
    if not pad_to_max_length and not padding_invariant(start.config):
        raise ConfigError(f"data.pad_to_max_length=false needs a padding-invariant model; {start.path} is not "
                          "(an original checkpoint reproduces the original, whose outputs depend on padding)")


def _hf_config(path: str) -> PretrainedConfig:
    cfg_file = path if path.endswith(".json") else os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise ConfigError(f"start: no model config at {cfg_file}")
    with open(cfg_file) as f:
        d = json.load(f)
    if "model_type" not in d:
        raise ConfigError(f"start: {cfg_file} has no model_type; is it a Hugging Face model config?")
    return config_from_dict(d, cfg_file)


def _has_tokenizer(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))


def _hf_weights_file(path: str) -> str:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise ConfigError(f"start: {path} holds no model.safetensors or pytorch_model.bin")


def _hf_state(path: str) -> dict[str, torch.Tensor]:
    f = _hf_weights_file(path)
    try:
        if f.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(f)
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ConfigError(f"start: cannot read {f}: {type(e).__name__}: {e}") from e
    check_contents(state, f, key=None)
    return state


def _composer_file(path: str) -> str:
    if os.path.isdir(path):
        latest = os.path.join(path, "latest-rank0.pt")
        if os.path.exists(latest):
            return os.path.realpath(latest)
        files = sorted(glob.glob(os.path.join(path, "*.pt")), key=os.path.getmtime)
        if not files:
            raise ConfigError(f"start: composer checkpoint folder {path} holds no *.pt file")
        return files[-1]
    if not os.path.isfile(path):
        raise ConfigError(f"start: composer checkpoint {path} does not exist")
    return path


def _composer_state(path: str, trust: bool = False) -> dict[str, torch.Tensor]:
    if trust:
        warn_trusted(path, "start.trust_checkpoint")
    try:
        # Weights-only unpickling with the few non-tensor types our checkpoints hold (RNG, timestamps);
        # anything else is refused before it can run (m2bert.train.checkpoint_safety).
        ckpt = (torch.load(path, map_location="cpu", weights_only=False) if trust
                else load_checkpoint_safely(path, key="start.trust_checkpoint"))
        model_state = ckpt["state"]["model"]
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"start: cannot read {path} as a Composer checkpoint: {type(e).__name__}: {e}") from e
    # ComposerMLM / ComposerClassifier keep the HF model under "model."; other keys are aliases.
    state = {k[len("model."):]: v for k, v in model_state.items() if k.startswith("model.")}
    if not state:
        raise ConfigError(f"start: {path} has no model.* weights (is it an m2bert Composer checkpoint?)")
    return state


def _original_config(path: str | None) -> dict[str, Any]:
    if not path:
        raise ConfigError("start.kind=original needs start.config: the original config dict as JSON, "
                          "or a .pt file holding {'config': {...}}")
    if not os.path.isfile(path):
        raise ConfigError(f"start.config={path} does not exist")
    if path.endswith(".json"):
        with open(path) as f:
            d = json.load(f)
    else:
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"start.config: cannot read {path}: {type(e).__name__}: {e}") from e
        check_contents(d, path, key=None)
    d = d.get("config", d) if isinstance(d, dict) else d
    if not isinstance(d, dict):
        raise ConfigError(f"start.config: {path} holds no config dict")
    return d


def resolve_start_config(spec: StartConfig) -> Start:
    """``resolve_start`` for a ``start`` section of the config (or a job's ``Start.spec()``)."""
    return resolve_start(spec.kind, spec.path, spec.config, spec.tokenizer, trust=spec.trust_checkpoint)


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def not_an_hf_directory(path: str) -> str:
    """Why ``start.path`` is no HF directory, naming the kind it looks like: a ``.pt`` file is a checkpoint (ours
    Composer's, or an original M2 one, which was trained with Composer too)."""
    if os.path.isfile(path) and path.endswith(CHECKPOINT_SUFFIXES):
        return (f"start.path={path} is a checkpoint file, but start.kind=hf expects a Hugging Face directory: for "
                f"a checkpoint of m2bert-pretrain add start.kind=composer (an original M2 checkpoint: "
                f"start.kind=original start.config=<its config.json>)")
    if os.path.isfile(path):
        return f"start.path={path} is a file, but start.kind=hf expects a Hugging Face directory (config.json, weights)"
    return f"start: Hugging Face directory {path} does not exist"


def resolve_start(kind: str, path: str, config: str | None = None, tokenizer: str | None = None,
                  trust: bool = False) -> Start:
    """Find and read everything a start needs; any problem is a ConfigError naming the file."""
    if not path:
        raise ConfigError("start.path is not set: give an HF directory, a Composer checkpoint or an original checkpoint")
    path = os.path.expanduser(str(path))
    if object_store.is_remote(path):
        if kind != "hf":
            raise ConfigError(f"start.path={path}: only start.kind=hf reads from an object store; download the "
                              f"{kind} checkpoint and give its local path")
        # Downloaded once into the cache (reused while the store lists the same files), then read like a local
        # folder: safetensors or the weights-only loader, never code from the folder.
        path = str(object_store.cached_folder(path, "start.path"))
    if kind == "hf":
        if not os.path.isdir(path):
            raise ConfigError(not_an_hf_directory(path))
        model_config = _hf_config(config or path)
        tok = tokenizer or (path if _has_tokenizer(path) else None)
        state = _hf_state(path)
        weights = _hf_weights_file(path)
    elif kind == "composer":
        path = _composer_file(path)
        beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "hf")
        if config or os.path.isfile(os.path.join(beside, "config.json")):
            model_config = _hf_config(config or beside)
        else:
            raise ConfigError(f"start: no model config for composer checkpoint {path}: set start.config "
                              f"(an HF dir or config.json); looked for {beside}/config.json")
        tok = tokenizer or (config if config and _has_tokenizer(config) else None) or (beside if _has_tokenizer(beside) else None)
        state = _composer_state(path, trust)
        weights = path
    elif kind == "original":
        from m2bert.model.original import original_to_ours, read_original_state_dict

        if not os.path.isfile(path):
            raise ConfigError(f"start: original checkpoint {path} does not exist")
        model_config = M2BertConfig.from_original(_original_config(config))
        tok = tokenizer or "bert-base-uncased"
        weights = path
        try:
            raw = read_original_state_dict(path)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"start: {e}") from e
        state = {}
        for k, v in raw.items():
            try:
                name = original_to_ours(k)
            except KeyError as e:
                raise ConfigError(f"start: {path} has a key the original layout does not know: {k}") from e
            if name is not None:
                state[name] = v
    else:
        raise ConfigError(f"start.kind={kind!r}; choose hf, composer or original")
    if tok is None:
        raise ConfigError(f"start: no tokenizer found beside {path}; set start.tokenizer")
    encoder = [k for k in state if k.startswith("bert.")]
    if not encoder:
        raise ConfigError(f"start: {path} holds no encoder weights (bert.*)")
    return Start(kind=kind, path=path, config=model_config, tokenizer=str(tok), state=state, trust=trust,
                 config_path=config, weights=(weights,))


def classifier_config(start: Start, num_labels: int, pooling: str, kernels: str | None = None) -> PretrainedConfig:
    d = start.config.to_dict()
    for k in ("id2label", "label2id", "num_labels", "architectures"):
        d.pop(k, None)
    d["num_labels"] = num_labels
    if not is_m2(start.config):
        if pooling != "cls":
            raise ConfigError(f"pooling={pooling!r}: the BERT baseline classifies from its [CLS] pooler; use pooling=cls")
        return config_from_dict(d)
    d["pooling"] = pooling
    if kernels is not None:
        d["kernels"] = kernels
    return M2BertConfig.from_dict(d)


def load_classifier(start: Start, num_labels: int, pooling: str, kernels: str | None = None) -> torch.nn.Module:
    """A fresh classifier with the start's encoder (and pooler if it has one); the classifier layer is new."""
    from transformers import BertForSequenceClassification

    from m2bert.model import M2BertForSequenceClassification

    config = classifier_config(start, num_labels, pooling, kernels)
    if is_m2(config):
        model: torch.nn.Module = M2BertForSequenceClassification(config)
    else:
        model = BertForSequenceClassification(config)
    state = {k: v for k, v in start.state.items() if not k.startswith(_DROP_PREFIXES)}
    check_shapes(state, model.state_dict(), f"start: {start.path}")
    result = model.load_state_dict(state, strict=False)
    fresh = ("head.", "classifier.", "bert.pooler.")  # new per task (the pooler only where the start has none)
    missing = [k for k in result.missing_keys if not k.startswith(fresh)]
    if missing or result.unexpected_keys:
        raise ConfigError(f"start: {start.path} does not match the model config: missing {missing[:10]}, "
                          f"unexpected {list(result.unexpected_keys)[:10]}")
    kept_pooler = not any(k.startswith(("head.pooler.", "bert.pooler.")) for k in result.missing_keys)
    log.debug("loaded %s (%s): encoder%s from checkpoint, classifier fresh", start.path, start.kind,
              " and pooler" if kept_pooler else "")
    return model
