"""The portable form of an export: the model's code travels with it, for people without m2bert (the Hub).

Our exports hold no code: ``import m2bert`` registers the M2-BERT classes with transformers' Auto factories, and
without it ``AutoModel`` / ``SentenceTransformer`` fail with transformers' "does not recognize this architecture /
upgrade Transformers" message. ``save_portable(src, out)`` (console script ``m2bert-make-portable SRC OUT``) copies
one of our exports (an ``m2bert-pretrain`` ``hf/``, a GLUE ``final/``, a sentence-transformers export, a retrieval
``model/``) and adds

* the model's code, generated from m2bert's own modules: one flat folder of files that import each other
  relatively (``from .monarch import ...``; transformers copies exactly those), entry points
  ``configuration_m2bert.py`` and ``modeling_m2bert.py``. It runs the PyTorch layers only (m2bert's fused Triton
  kernels load their sources by path, which remote code cannot): the same outputs, slower on GPUs;
* an ``auto_map`` in ``config.json`` naming those classes for AutoConfig, AutoModel, AutoModelForMaskedLM and
  AutoModelForSequenceClassification;
* a "Loading without m2bert" section in the model card.

A user then loads it with plain transformers: ``AutoModel.from_pretrained(out, trust_remote_code=True)`` or
``SentenceTransformer(out, trust_remote_code=True)``. It is opt-in: the code runs in whoever loads it, and they have
to trust it. m2bert's own loaders never run it: they load with ``trust_remote_code=False`` and the installed
classes, and m2bert's saves drop the ``auto_map`` (``M2BertConfig.to_dict``).

The generator is strict: an import it cannot make relative (a module of m2bert not shipped) or a third-party
import other than torch and transformers fails the export, unless it sits inside a function the portable code can
leave out (``from_original_checkpoint``, options' Hydra helpers), and then nothing shipped may call that function.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from m2bert import cli_help
from m2bert.atomic import atomic_directory
from m2bert.train.model_card import WITHOUT_M2BERT

log = logging.getLogger(__name__)

# m2bert's modules the portable code is generated from → their file name in the export (without ".py").
MODULES: dict[str, str] = {
    "m2bert.options": "options",
    "m2bert.config": "configuration_m2bert",
    "m2bert.model.dropout": "dropout",
    "m2bert.model.monarch": "monarch",
    "m2bert.model.long_conv": "long_conv",
    "m2bert.model.implicit_filter": "implicit_filter",
    "m2bert.model.seq_mixer_conv": "seq_mixer_conv",
    "m2bert.model.sequence_mixer": "sequence_mixer",
    "m2bert.model.dimension_mixer": "dimension_mixer",
    "m2bert.model.embeddings": "embeddings",
    "m2bert.model.pooling": "pooling",
    "m2bert.model.heads": "heads",
    "m2bert.model.inputs": "inputs",
    "m2bert.model.modeling": "modeling_m2bert",
}
# m2bert.model.kernel_switch chooses between the PyTorch layers and the fused Triton kernels; its portable
# stand-in always chooses PyTorch. The layers use it as a module (``kernel_switch.use_triton``): it names itself, so
# they import it as ``from .kernel_switch import kernel_switch``, the form transformers sees (and copies the file).
KERNEL_SWITCH = "m2bert.model.kernel_switch"
KERNEL_SWITCH_SOURCE = '''"""The portable code's stand-in for m2bert.model.kernel_switch: the PyTorch layers only.

m2bert's fused Triton kernels (pip install m2bert) give the same outputs, faster on GPUs.
"""
from __future__ import annotations

import sys

import torch


def use_triton(config_kernels: str, device: torch.device | str, kernel: str | None = None) -> bool:
    if config_kernels == "triton":
        raise RuntimeError("kernels=triton needs m2bert's fused kernels (pip install m2bert); this portable code runs "
                           "the PyTorch layers (kernels=auto or torch)")
    return False


def seq_mixer_fits(seqlen: int) -> bool:
    return False


kernel_switch = sys.modules[__name__]
'''
# m2bert.auto registers the installed classes with transformers' Auto* factories; in the portable code
# config.json's auto_map names the classes instead, so its stand-in registers nothing.
AUTO = "m2bert.auto"
AUTO_SOURCE = '''"""The portable code's stand-in for m2bert.auto: config.json's auto_map names the classes."""


def register_if_pending() -> None:
    return None
'''
ENTRY = "modeling_m2bert.py"  # the module transformers loads first (auto_map), and the files it copies with it
ALLOWED_PACKAGES = frozenset({"torch", "transformers"})  # besides the standard library
AUTO_MAP = {
    "AutoConfig": "configuration_m2bert.M2BertConfig",
    "AutoModel": "modeling_m2bert.M2BertModel",
    "AutoModelForMaskedLM": "modeling_m2bert.M2BertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_m2bert.M2BertForSequenceClassification",
}
CARD_SECTION = """
## Loading without m2bert

This folder also holds the model's code (`modeling_m2bert.py` and the files it imports; generated from m2bert,
PyTorch layers only), and its `config.json` names it (`auto_map`). Plain transformers loads it when you allow that
code to run:

```python
from transformers import AutoModel, AutoTokenizer

model = AutoModel.from_pretrained("path/or/hub-id", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("path/or/hub-id")
```
{st}
With m2bert installed, `import m2bert` and leave `trust_remote_code` off: the installed classes load it (with the
fused GPU kernels), and the code here never runs.
"""
# In the copy, the card's paragraph on sharing (``model_card.WITHOUT_M2BERT``: "make a portable copy") becomes:
CARD_HERE = ("This copy holds the model's code, so it also loads without m2bert installed: see \"Loading without "
             "m2bert\" below.")
CARD_ST = """
As a sentence-transformers model:

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/or/hub-id", trust_remote_code=True)
```
"""


def _allowed(module: str) -> bool:
    root = module.split(".")[0]
    return root in sys.stdlib_module_names or root in ALLOWED_PACKAGES


def _import_text(node: ast.ImportFrom) -> str | None:
    """The relative form of an import of m2bert's (``None``: not one the portable code ships)."""
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    if node.module in MODULES:
        return f"from .{MODULES[node.module]} import {names}"
    if node.module == AUTO:
        return f"from .auto import {names}"
    if [f"{node.module}.{a.name}" for a in node.names] == [KERNEL_SWITCH]:
        alias = node.names[0].asname
        return "from .kernel_switch import kernel_switch" + (f" as {alias}" if alias else "")
    return None


def _foreign(node: ast.AST) -> str | None:
    """The module an import statement needs that the portable code cannot have, if any."""
    if isinstance(node, ast.Import):
        return next((a.name for a in node.names if not _allowed(a.name)), None)
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module.split(".")[0] == "m2bert":
            return None if _import_text(node) else node.module
        return None if _allowed(node.module) else node.module
    return None


def portable_source(module: str) -> tuple[str, list[str]]:
    """The portable text of one of ``MODULES``, and the functions left out (they need what it cannot ship)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"portable code: cannot find the source of {module}")
    text = Path(spec.origin).read_text(encoding="utf-8")
    lines = text.splitlines()
    edits: list[tuple[int, int, list[str]]] = []  # (first line, last line) 1-based, replacement
    dropped: list[str] = []
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                not any(a <= node.lineno <= b for a, b, _ in edits):
            needs = next((m for m in map(_foreign, ast.walk(node)) if m), None)
            if needs:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                edits.append((first, node.end_lineno or node.lineno, []))
                dropped.append(node.name)
                log.debug("portable code: %s.%s left out (it imports %s)", module, node.name, needs)
    inside = [(a, b) for a, b, _ in edits]
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or any(a <= node.lineno <= b for a, b in inside):
            continue
        needs = _foreign(node)
        if needs:
            raise RuntimeError(f"portable code: {module} line {node.lineno} imports {needs}, which the portable "
                               f"code cannot ship (m2bert.portable.MODULES lists what it can)")
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("m2bert"):
            edits.append((node.lineno, node.end_lineno or node.lineno,
                          [" " * node.col_offset + str(_import_text(node))]))
    for first, last, new in sorted(edits, reverse=True):
        lines[first - 1:last] = new
    header = f"# Generated by m2bert.portable from {module} (m2bert {_version()}): the portable code of an export."
    return "\n".join([header, *lines]) + "\n", dropped


def _version() -> str:
    from m2bert import __version__

    return __version__


def _import_every_file(files: dict[str, str]) -> str:
    """Lines that make the entry module import every file it does not import itself: from a local folder
    transformers copies only the files the entry module imports, not what those import (from the Hub it follows
    them), and the import then fails on the first file left behind."""
    direct = {f"{node.module}.py" for node in ast.walk(ast.parse(files[ENTRY]))
              if isinstance(node, ast.ImportFrom) and node.level == 1}
    missing = sorted(set(files) - direct - {ENTRY})
    lines = [f"from .{name[:-3]} import __name__ as _{name[:-3]}  # noqa: E402, F401" for name in missing]
    return "\n# transformers copies a local folder's files only when this module imports them itself:\n" + \
        "\n".join(lines) + "\n" if lines else ""


def portable_files() -> dict[str, str]:
    """File name → text of the portable code; checked to import only each other, torch, transformers and the
    standard library, and never to call a function it left out."""
    files = {"kernel_switch.py": KERNEL_SWITCH_SOURCE, "auto.py": AUTO_SOURCE}
    dropped: dict[str, str] = {}
    for module, name in MODULES.items():
        files[f"{name}.py"], left_out = portable_source(module)
        dropped.update((fn, module) for fn in left_out)
    files[ENTRY] += _import_every_file(files)
    for name, text in files.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level:
                if node.level != 1 or f"{node.module}.py" not in files:
                    raise RuntimeError(f"portable code: {name} imports .{node.module or ''}, which it does not ship")
            elif _foreign(node) or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("m2bert")):
                raise RuntimeError(f"portable code: {name} still imports {_foreign(node) or node.module}")
            used = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if used in dropped:
                raise RuntimeError(f"portable code: {name} uses {used}, which it leaves out of {dropped[used]} "
                                   f"(it needs more than torch and transformers)")
    return files


def add_portable_code(folder: str | os.PathLike[str]) -> None:
    """Write the portable code into an export ``folder`` (its ``config.json`` in the root), name it in
    ``config.json``'s ``auto_map`` and add the "Loading without m2bert" section to its README.md. For folders being
    written (inside ``atomic_directory``); :func:`save_portable` copies a finished export."""
    folder = Path(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") != "m2_bert":
        raise ValueError(f"{config_path}: model_type {config.get('model_type')!r} is not m2_bert; only M2-BERT "
                         f"exports need their code (transformers' own BERT loads without it)")
    for name, text in portable_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    config["auto_map"] = AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = folder / "README.md"
    st = CARD_ST if (folder / "modules.json").is_file() else ""
    previous = card.read_text(encoding="utf-8") if card.is_file() else "# M2-BERT\n"
    previous = previous.replace(WITHOUT_M2BERT, CARD_HERE)
    card.write_text(previous.rstrip("\n") + "\n" + CARD_SECTION.format(st=st), encoding="utf-8")


def save_portable(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """A copy of the export ``source`` in ``out`` with the model's code (:func:`add_portable_code`), written
    atomically. ``source`` is an M2-BERT HF directory or a sentence-transformers export of ours."""
    source, out = Path(source), Path(out)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source / 'config.json'} is missing: pass an M2-BERT export (m2bert-pretrain's "
                                f"<run>/hf, a GLUE final/, or a sentence-transformers export)")
    if out.resolve() == source.resolve() or out.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"{out}: write the portable copy outside {source}")
    if (source / "modules.json").is_file():
        from m2bert.embeddings.sentence_transformers import check_modules

        check_modules(source)
    with atomic_directory(out) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        add_portable_code(tmp)
        _cap_tokenizer_length(tmp)
    log.info("portable export: %s (load it with trust_remote_code=True; m2bert not needed)", out)
    return out


def _cap_tokenizer_length(folder: Path) -> None:
    """An export written before tokenizers were saved with the model's length (1e30: ``truncation=True`` would pass
    inputs the model refuses) gets it now; a shorter one (a sentence-transformers ``max_seq_length``) stays."""
    from m2bert.config import M2BertConfig, max_input_length
    from m2bert.data.tokenizer import set_model_max_length

    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        limit = max_input_length(M2BertConfig.from_pretrained(folder))
        if json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length", limit + 1) > limit:
            set_model_max_length(folder, limit)


def main(argv: Sequence[str] | None = None) -> int:
    """``m2bert-make-portable SRC OUT``: bad input is one line on stderr, exit 2."""
    ap = cli_help.ArgumentParser(__doc__)
    ap.add_argument("source", help="an M2-BERT export: <run>/hf, a GLUE final/, a sentence-transformers export")
    ap.add_argument("out", help="the portable copy to write (an earlier one there is replaced)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        save_portable(args.source, args.out)
    except (OSError, ValueError) as e:
        sys.stderr.write(f"m2bert-make-portable: error: {str(e).splitlines()[0]}\n")
        raise SystemExit(2) from e
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
