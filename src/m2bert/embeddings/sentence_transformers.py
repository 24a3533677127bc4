"""M2-BERT as a sentence-transformers model: export a directory that ``SentenceTransformer(dir)`` loads, and load one.

The export is ST's standard layout (``modules.json``; ``sentence_bert_config.json`` with ``max_seq_length``;
the encoder's ``config.json`` + safetensors + tokenizer in the root; ``1_Pooling`` with the config's
``pooling``, ``cls`` or ``mean``; ``2_Normalize`` when ``normalize_embeddings``; our model card in README.md). The
encoder is our ``M2BertModel``, which ``import m2bert`` registers with ``AutoModel``, so loading needs no
``trust_remote_code`` (and the export holds no code). ``portable=True`` adds the model's code for people without
m2bert, who load it with ``trust_remote_code=True`` (:mod:`m2bert.portable`).

Why this works without padding every input to the maximum length (the original does, because padding leaks
into its real tokens): our models are padding-invariant (``padding_invariant=True``), so ST's length-sorted,
dynamically padded batches give the same embeddings as one text at a time. A model that is not (one
loaded with ``from_original_checkpoint`` as is) is exported as it is, with a warning.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m2bert.atomic import atomic_directory

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")


def _pooling_of(config: Any, pooling: str | None) -> str:
    mode = pooling or getattr(config, "pooling", None) or "mean"
    if mode not in POOLINGS:
        raise ValueError(f"pooling={mode!r}: a sentence embedding pools with one of {', '.join(POOLINGS)}")
    return mode


def build_sentence_transformer(hf_dir: str | os.PathLike[str], *, max_seq_length: int | None = None,
                               pooling: str | None = None, normalize: bool | None = None,
                               device: str | None = None) -> SentenceTransformer:
    """A SentenceTransformer around our HF directory (an ``m2bert-pretrain`` ``hf/`` export, a GLUE ``final/``,
    or any ``save_pretrained`` of an M2-BERT with its tokenizer): Transformer → Pooling → [Normalize].

    ``max_seq_length`` defaults to the model's ``max_position_embeddings``; ``pooling`` and ``normalize``
    to the config's ``pooling`` and ``normalize_embeddings``.
    """
    import m2bert  # noqa: F401 - registers AutoConfig/AutoModel for model_type m2_bert
    from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoConfig

    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir / 'config.json'} is missing: expected an M2-BERT Hugging Face directory "
                                f"(m2bert-pretrain writes <run_root>/<run_name>/hf)")
    config = AutoConfig.from_pretrained(hf_dir, trust_remote_code=False)
    if config.model_type != "m2_bert":
        raise ValueError(f"{hf_dir}: model_type {config.model_type!r} is not m2_bert")
    if not getattr(config, "padding_invariant", True):
        log.warning("%s: padding_invariant=False, so embeddings depend on how much padding a batch adds "
                    "(set padding_invariant=True in its config.json for batch-independent embeddings)", hf_dir)
    limit = config.max_position_embeddings
    length = max_seq_length or limit
    if length > limit:
        raise ValueError(f"max_seq_length={length} exceeds the model's max_position_embeddings={limit}")
    transformer = Transformer(str(hf_dir), max_seq_length=length, unpad_inputs=False)
    modules: list[Any] = [transformer, Pooling(config.hidden_size, pooling_mode=_pooling_of(config, pooling))]
    if getattr(config, "normalize_embeddings", False) if normalize is None else normalize:
        modules.append(Normalize())
    # The model card never asks the hub about a base model or dataset (local_files_only): exports stay offline.
    return SentenceTransformer(modules=modules, device=device,
                               model_card_data=SentenceTransformerModelCardData(local_files_only=True))


def export_sentence_transformer(source: str | os.PathLike[str] | PreTrainedModel, out_dir: str | os.PathLike[str], *,
                                tokenizer: PreTrainedTokenizerBase | None = None, max_seq_length: int | None = None,
                                pooling: str | None = None, normalize: bool | None = None,
                                portable: bool = False) -> Path:
    """Write a sentence-transformers directory for ``source`` (our HF directory, or a model object with its
    ``tokenizer``) to ``out_dir``, atomically. Returns ``out_dir``. ``portable``: with the model's code
    (``save_sentence_transformer``)."""
    if isinstance(source, (str, os.PathLike)):
        model = build_sentence_transformer(source, max_seq_length=max_seq_length, pooling=pooling,
                                           normalize=normalize, device="cpu")
        return save_sentence_transformer(model, out_dir, portable=portable)
    if tokenizer is None:
        raise ValueError("export_sentence_transformer(model, ...) needs the model's tokenizer (tokenizer=...)")
    with tempfile.TemporaryDirectory(prefix=".m2bert-st-") as tmp:
        source.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        model = build_sentence_transformer(tmp, max_seq_length=max_seq_length, pooling=pooling, normalize=normalize,
                                           device="cpu")
        return save_sentence_transformer(model, out_dir, portable=portable)


def save_sentence_transformer(model: SentenceTransformer, out_dir: str | os.PathLike[str], *,
                              portable: bool = False) -> Path:
    """``model.save`` into a temporary sibling renamed into place: a finished directory or none. The encoder is
    saved as the base ``M2BertModel`` (``AutoModel``), whatever head class it was loaded from; the tokenizer's
    ``model_max_length`` is the model's ``max_seq_length`` (``truncation=True`` stops where the model does);
    README.md is our card (how to load it: sentence-transformers' own card omits ``import m2bert``).
    ``portable``: add the model's code and an ``auto_map`` (:func:`m2bert.portable.add_portable_code`), for
    people without m2bert (``trust_remote_code=True``)."""
    from m2bert.config import max_input_length
    from m2bert.data.tokenizer import set_model_max_length
    from m2bert.portable import add_portable_code
    from m2bert.train.model_card import sentence_transformer_card

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        model.save(str(tmp), safe_serialization=True, create_model_card=False)
        set_model_max_length(tmp, model.max_seq_length)
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        if "auto_map" in config:  # never point a loader at remote code
            raise ValueError(f"{out_dir}: the encoder's config.json has an auto_map; refusing to export code")
        # ST >= 5.4 keeps the length in the tokenizer's model_max_length; older loaders (and readers of the
        # layout) look for it here. 5.x passes it to Transformer(max_seq_length=...), which agrees.
        st_config_path = tmp / "sentence_bert_config.json"
        st_config = json.loads(st_config_path.read_text(encoding="utf-8"))
        st_config.update(max_seq_length=model.max_seq_length, do_lower_case=False)
        st_config_path.write_text(json.dumps(st_config, indent=4) + "\n", encoding="utf-8")
        encoder = model[0].auto_model.config
        pooling, normalize = _saved_pipeline(tmp)
        card = sentence_transformer_card(f"{out_dir.name}: M2-BERT sentence embeddings", pooling, normalize,
                                         encoder.hidden_size, model.max_seq_length, max_input_length(encoder),
                                         str(model))
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if portable:
            add_portable_code(tmp)
    return out_dir


def _saved_pipeline(folder: Path) -> tuple[str, bool]:
    """The pooling mode and whether embeddings are normalised, as a saved folder's modules say (the files, not the
    module objects, whose attributes differ between sentence-transformers 5.x releases)."""
    pooling, normalize = "?", False
    for entry in json.loads((folder / "modules.json").read_text(encoding="utf-8")):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        normalize = normalize or kind == "Normalize"
        if kind == "Pooling":
            config = json.loads((folder / entry["path"] / "config.json").read_text(encoding="utf-8"))
            modes = config.get("pooling_mode") or [k[len("pooling_mode_"):] for k, v in config.items()
                                                    if k.startswith("pooling_mode_") and v is True]
            pooling = modes if isinstance(modes, str) else "+".join(map(str, modes))
    return pooling, normalize


def is_sentence_transformer_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "modules.json").is_file()


# The module classes a folder may name without trust_remote_code: sentence-transformers' own, and only those that
# load no further class named in their own config (Router, Asym and WordEmbeddings do: refused, as is any other
# name). Our exports hold Transformer, Pooling and Normalize.
SAFE_MODULES = ("Transformer", "Pooling", "Normalize", "Dense", "Dropout", "LayerNorm", "WeightedLayerPooling",
                "StaticEmbedding", "CNN", "LSTM", "BoW", "WordWeights", "CLIPModel")
_ST_PREFIX = "sentence_transformers."


def _safe_module_class(class_ref: Any) -> bool:
    """Whether ``class_ref`` (a modules.json ``type``) names one of SAFE_MODULES. Only names inside the installed
    sentence_transformers package are imported to find out (ST's deprecated ``sentence_transformers.models.X``
    aliases included); sentence-transformers itself would import any other name from the folder or sys.path."""
    if not isinstance(class_ref, str) or not class_ref.startswith(_ST_PREFIX):
        return False
    from sentence_transformers.sentence_transformer import modules
    from sentence_transformers.util import import_from_string

    try:
        cls = import_from_string(class_ref)
    except ImportError:
        return False
    return any(cls is getattr(modules, name) for name in SAFE_MODULES)


def check_modules(folder: str | os.PathLike[str]) -> None:
    """Refuse (one line naming the file and the module) a sentence-transformers folder whose ``modules.json`` names
    a module class sentence-transformers would import from outside its own package (a local ``evil_mod.Evil`` is
    imported, and run, even with ``trust_remote_code=False``) or a module folder outside ``folder``."""
    folder = Path(folder)
    modules_json = folder / "modules.json"
    try:
        entries = json.loads(modules_json.read_text(encoding="utf-8"))
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise TypeError("not a list of objects")
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{modules_json}: not a sentence-transformers modules.json ({type(e).__name__}: {e})") from e
    root = folder.resolve()
    for i, entry in enumerate(entries):
        class_ref, sub = entry.get("type"), entry.get("path", "")
        if not _safe_module_class(class_ref):
            raise ValueError(f"{modules_json}: module {i} has type {class_ref!r}, not one of sentence-transformers' "
                             f"modules this loader trusts ({', '.join(SAFE_MODULES)}); loading it would import and "
                             f"run code: pass trust_remote_code=True only if you trust {folder}")
        if not isinstance(sub, str) or Path(sub).is_absolute() or ".." in Path(sub).parts \
                or not (root / sub).resolve().is_relative_to(root):
            raise ValueError(f"{modules_json}: module {i} ({class_ref}) has path {sub!r}, outside {folder}")


def load_sentence_transformer(source: str | os.PathLike[str], *, max_seq_length: int | None = None,
                              pooling: str | None = None, normalize: bool | None = None,
                              device: str | None = None, trust_remote_code: bool = False) -> SentenceTransformer:
    """A SentenceTransformer from an exported ST directory (as saved) or from our HF directory (built as
    :func:`build_sentence_transformer` does). Runs no code from the folder unless ``trust_remote_code``: its
    ``modules.json`` may name only sentence-transformers' own modules (:func:`check_modules`)."""
    import m2bert  # noqa: F401 - registers the Auto classes
    from sentence_transformers import SentenceTransformer

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass an M2-BERT HF directory or an exported "
                                f"sentence-transformers directory")
    if is_sentence_transformer_dir(path):
        if trust_remote_code:
            log.warning("trust_remote_code=True: %s may import and run code named in its modules.json", path)
        else:
            check_modules(path)
        model = SentenceTransformer(str(path), device=device, trust_remote_code=trust_remote_code,
                                    local_files_only=True)
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        return model
    return build_sentence_transformer(path, max_seq_length=max_seq_length, pooling=pooling, normalize=normalize,
                                      device=device)


__all__ = ["build_sentence_transformer", "check_modules", "export_sentence_transformer", "is_sentence_transformer_dir",
           "load_sentence_transformer", "save_sentence_transformer"]
