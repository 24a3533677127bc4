"""Open checkpoints without running code they may carry.

A ``.pt`` file is a pickle, and unpickling calls whatever its ``GLOBAL``/``REDUCE`` opcodes name:
a crafted file runs code the moment Composer (``torch.load(weights_only=False)``) or we read it.
Every checkpoint we read (GLUE ``start.kind=composer``, ``load_path``, the autoresume file) is
therefore first opened with torch's weights-only unpickler, allowing exactly the types our own
Composer checkpoints hold besides tensors and plain containers (found by listing the globals of
a real pretraining checkpoint): numpy arrays and dtypes (RNG states, dataset state),
``datetime.timedelta`` (wall-clock timestamps) and ``TorchVersion`` (metadata). Anything else
is refused with one line, before anything unpickles the file; ``trust_checkpoint=true`` skips
the check for files the user vouches for.
"""
from __future__ import annotations

import datetime
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from m2bert.options import ConfigError

log = logging.getLogger(__name__)


def _numpy_globals() -> list[Any]:
    """numpy's array reconstruction and its dtype classes, under numpy 1's and numpy 2's module names."""
    out: list[Any] = [np.ndarray, np.dtype]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            multiarray = __import__(mod, fromlist=["_reconstruct"])
        except ImportError:
            continue
        out += [multiarray._reconstruct, multiarray.scalar]
        break
    out += sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGSUV"} | {type(np.dtype("M8[s]")), type(np.dtype("m8[s]"))},
                  key=lambda t: t.__name__)
    return out


SAFE_GLOBALS: list[Any] = [*_numpy_globals(), datetime.timedelta, TorchVersion]


@contextmanager
def safe_globals() -> Iterator[None]:
    """Allow our checkpoints' few non-tensor types in ``torch.load(weights_only=True)``."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


def _disallowed(message: str) -> str:
    """The global a weights-only unpickler refused, read from torch's error message."""
    for pattern in (r"Unsupported global: GLOBAL ([\w.]+)", r"got <class '([\w.]+)'>", r"GLOBAL ([\w.]+)",
                    r"Unsupported operand (\d+)", r"(Unsupported [^.\n]+)"):
        m = re.search(pattern, message)
        if m:
            return m.group(1)
    return message.strip().splitlines()[-1][:200] if message.strip() else "an unsupported construct"


def _refusal(path: str, what: str, key: str) -> ConfigError:
    return ConfigError(f"{path}: checkpoint refused, its pickle calls {what}, which our checkpoints never contain "
                       f"(loading it could run code); if you made or trust this file, set {key}=true")


def load_checkpoint_safely(path: str | os.PathLike[str], key: str = "trust_checkpoint") -> dict[str, Any]:
    """Load a Composer checkpoint with the weights-only unpickler and our allowlist; ConfigError if refused.

    ``key`` is the config key named in the message as the way out (``start.trust_checkpoint`` for GLUE).
    """
    path = str(path)
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a folder (a sharded checkpoint?): its pickles cannot be checked; "
                          f"set {key}=true if you trust it")
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path} does not exist")
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        # Lists every global in the pickle without executing any: the clearest message names them all.
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - an unreadable archive is reported by the load below
            unsafe = []
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
        refused = [g for g in unsafe if g not in allowed]
        if refused:
            raise _refusal(path, ", ".join(refused), key)
    try:
        with safe_globals():
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        raise _refusal(path, _disallowed(str(e)), key) from None
    except Exception as e:  # noqa: BLE001 - truncated or foreign files: one line naming the file
        raise ConfigError(f"{path}: cannot read as a checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path}: not a Composer checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def check_checkpoint(path: str | os.PathLike[str], trust: bool = False, key: str = "trust_checkpoint") -> None:
    """Refuse ``path`` unless it holds only what our checkpoints hold, or the user set ``key=true``."""
    if trust:
        log.warning("%s=true: %s is unpickled without checks; a crafted file can run code", key, path)
        return
    load_checkpoint_safely(path, key)
