"""Atomic outputs: nothing half-written may look complete.

Every folder or file the pipeline produces (sample, tokenizer, Hugging Face export, summaries)
is written under a temporary sibling name and renamed into place in one step, so an
interrupted run leaves either the previous complete output or a hidden ``.partial`` folder.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@contextmanager
def atomic_directory(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``out`` in one rename."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """``path`` holds ``data`` whole or is left as it was (a rename of a private temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def finite_json(obj: Any, where: str = "$", replaced: list[str] | None = None) -> Any:
    """``obj`` with every NaN/±inf float replaced by None; the JSON paths replaced go into ``replaced``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if replaced is not None:
            replaced.append(f"{where}={obj}")
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v, f"{where}.{k}", replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, f"{where}[{i}]", replaced) for i, v in enumerate(obj)]
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Strict JSON: a non-finite number (a NaN metric) is written as null, with a warning naming it,
    never as the ``NaN`` token that json.dumps emits by default and other JSON readers reject."""
    replaced: list[str] = []
    clean = finite_json(obj, replaced=replaced)
    if replaced:
        log.warning("%s: non-finite value(s) written as null: %s", path, ", ".join(replaced[:5]) +
                    (f" (+{len(replaced) - 5} more)" if len(replaced) > 5 else ""))
    atomic_write_text(path, json.dumps(clean, indent=2, allow_nan=False) + "\n")
