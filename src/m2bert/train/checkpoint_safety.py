"""Open checkpoints without running code they may carry.

A ``.pt`` file is a pickle, and unpickling calls whatever its ``GLOBAL``/``REDUCE`` opcodes name:
a crafted file runs code the moment Composer (``torch.load(weights_only=False)``) or we read it.
So a checkpoint is **read once**: through one open file handle, with torch's weights-only
unpickler, allowing exactly the types our own Composer checkpoints hold besides tensors and plain
containers (found by listing the globals of a real pretraining checkpoint): numpy arrays and
dtypes (RNG states, dataset state), ``datetime.timedelta`` (wall-clock timestamps) and
``TorchVersion`` (metadata). Anything else is refused with one line. What was read is then
checked (tensors inside their storage, numpy fields inside their item) and is what we use: for
Composer, :func:`verified_checkpoint` re-saves it in a private folder and Composer loads only that
file, so a file swapped after the check, or a tar that Composer would extract (and unpickle
``composer_states.pt`` from), never reaches it. ``trust_checkpoint=true`` skips all of this for
files the user vouches for.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import pickle
import pickletools
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

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
    """What the weights-only unpickler refused, in words, read from torch's error message."""
    m = re.search(r"Unsupported operand (\d+)", message)
    if m:
        op = pickletools.code2op.get(chr(int(m.group(1))))
        return f"uses the opcode {op.name if op else 'byte ' + m.group(1)}"
    for pattern in (r"Unsupported global: GLOBAL ([\w.]+)", r"got <class '([\w.]+)'>", r"GLOBAL ([\w.]+)"):
        m = re.search(pattern, message)
        if m:
            return f"calls {m.group(1)}"
    m = re.search(r"(Unsupported [^.\n]+)", message)
    last = m.group(1) if m else (message.strip().splitlines()[-1][:200] if message.strip() else "an unsupported construct")
    return f"holds {last}"


def _refusal(path: str, what: str, key: str) -> ConfigError:
    return ConfigError(f"{path}: checkpoint refused, its pickle {what}, which our checkpoints never contain "
                       f"(loading it could run code); if you made or trust this file, set {key}=true")


def _dtype_problem(dt: np.dtype) -> str | None:
    """Why a numpy dtype could read outside its own bytes (a structured field past the item), or None."""
    for name, (sub, offset, *_) in (dt.fields or {}).items():
        if offset < 0 or offset + sub.itemsize > dt.itemsize:
            return (f"a numpy dtype whose field {name!r} (offset {offset}, {sub.itemsize} bytes) lies outside its "
                    f"{dt.itemsize}-byte item")
        if (problem := _dtype_problem(sub)) is not None:
            return problem
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        if base.itemsize * math.prod(shape) > dt.itemsize:
            return f"a numpy dtype whose sub-array {shape} of {base} exceeds its {dt.itemsize}-byte item"
        return _dtype_problem(base)
    return None


def _tensor_problem(t: torch.Tensor) -> str | None:
    """Why a tensor does not fit its storage (a view past its end, or more elements than it holds), or None.

    ``torch.load`` rebuilds a tensor from the size, stride and offset the pickle states; a (1e6, 1e6) view with
    stride 0 over one element loads fine and allocates terabytes at its first copy. Our checkpoints' tensors
    (weights, optimizer state) each cover their own elements, so storage must hold at least ``numel``."""
    if t.layout != torch.strided:
        return f"a {t.layout} tensor"
    if t.numel() == 0:
        return None
    held = t.untyped_storage().nbytes() // t.element_size()
    reach = t.storage_offset() + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    if t.storage_offset() < 0 or min(t.stride(), default=0) < 0 or reach >= held or t.numel() > held:
        return (f"a tensor of shape {tuple(t.shape)} (strides {t.stride()}, offset {t.storage_offset()}) that does "
                f"not fit its storage of {held} elements")
    return None


def check_contents(obj: Any, path: str | os.PathLike[str], key: str | None = "trust_checkpoint") -> None:
    """Refuse what unpickled fine but lies about its memory: tensors past their storage, numpy fields past their item.

    Walks every container iteratively (a pickle may nest deeply or refer to itself). ``key``: the config key
    that trusts the file, named as the way out (None: the route has none)."""
    stack: list[tuple[Any, str]] = [(obj, "")]
    seen: set[int] = set()
    while stack:
        o, where = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        problem = None
        if isinstance(o, torch.Tensor):
            problem = _tensor_problem(o)
        elif isinstance(o, (np.ndarray, np.generic)):
            problem = _dtype_problem(o.dtype)
        elif isinstance(o, np.dtype):
            problem = _dtype_problem(o)
        elif isinstance(o, Mapping):
            stack += [(k, where) for k in o.keys()] + [(v, f"{where}/{k}") for k, v in o.items()]
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack += [(v, f"{where}/{i}") for i, v in enumerate(o)]
        if problem is not None:
            way_out = f"; if you made or trust this file, set {key}=true" if key else ""
            raise ConfigError(f"{path}: checkpoint refused, {where or 'it'} is {problem}, which our checkpoints "
                              f"never contain{way_out}")


def _tar_refusal(path: str | os.PathLike[str], key: str) -> ConfigError:
    """The refusal of a tar checkpoint: Composer extracts it (members may be named ``../..``) and unpickles
    ``composer_states.pt`` from it before anything could check it."""
    return ConfigError(f"{path} is a tar archive (Composer's tar checkpoint layout): Composer would extract it and "
                       f"unpickle its members unchecked; give the .pt checkpoint itself, or if you made or trust "
                       f"this file, set {key}=true")


def _load_open(f: BinaryIO, path: str, key: str) -> dict[str, Any]:
    """The one read of a checkpoint: every check below and the load use the same open file."""
    from composer.utils import is_tar

    if is_tar(path) or tarfile.is_tarfile(f):
        raise _tar_refusal(path, key)
    f.seek(0)
    if zipfile.is_zipfile(f):
        # Lists every global in the pickle without executing any: the clearest message names them all.
        try:
            f.seek(0)
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(f)
        except Exception:  # noqa: BLE001 - an unreadable archive is reported by the load below
            unsafe = []
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
        refused = [g for g in unsafe if g not in allowed]
        if refused:
            raise _refusal(path, "calls " + ", ".join(refused), key)
    f.seek(0)
    try:
        with safe_globals():
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, _disallowed(str(e)), key) from None
    except Exception as e:  # noqa: BLE001 - truncated or foreign files: one line naming the file
        raise ConfigError(f"{path}: cannot read as a checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path}: not a Composer checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    check_contents(ckpt, path, key)
    return ckpt


def load_checkpoint_safely(path: str | os.PathLike[str], key: str = "trust_checkpoint",
                           shown: str | None = None) -> dict[str, Any]:
    """Load a Composer checkpoint with the weights-only unpickler and our allowlist; ConfigError if refused.

    The file is opened once: what is checked is what is returned, however the path changes meanwhile.
    ``key`` is the config key named in the message as the way out (``start.trust_checkpoint`` for GLUE);
    ``shown`` the name messages use (a download's URI rather than its private copy).
    """
    path = str(path)
    shown = shown or path
    if os.path.isdir(path):
        raise ConfigError(f"{shown} is a folder (a sharded checkpoint?): its pickles cannot be checked; "
                          f"set {key}=true if you trust it")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {shown} does not exist") from None
    with f:
        return _load_open(f, shown, key)


@dataclass
class VerifiedCheckpoint:
    """A checkpoint read once and verified, re-saved where only this process writes."""

    source: str  # what the user named, for messages
    path: str  # the private verified copy: the only file Composer may load
    model_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # state.model's tensor shapes


def _model_shapes(ckpt: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    state = ckpt.get("state")
    model = state.get("model") if isinstance(state, dict) else None
    return {k: tuple(v.shape) for k, v in model.items() if isinstance(v, torch.Tensor)} if isinstance(model, dict) else {}


@contextmanager
def verified_checkpoint(source: str, key: str = "trust_checkpoint") -> Iterator[VerifiedCheckpoint]:
    """Read ``source`` once (a local file, or a URI downloaded with Composer's object-store helpers into a
    private folder), verify it, and yield a private re-save of exactly the verified dict for Composer's
    ``load_path``; the folder (mode 0700) is removed on exit."""
    with tempfile.TemporaryDirectory(prefix="m2bert-checkpoint-") as private:
        local = source
        if "://" in source:
            from composer.utils import get_file

            local = os.path.join(private, "download")
            try:
                get_file(source, local, progress_bar=False)
            except Exception as e:  # noqa: BLE001 - missing object, no credentials, no network: one line
                raise ConfigError(f"load_path={source}: cannot download ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
        ckpt = load_checkpoint_safely(local, key, shown=source)
        shapes = _model_shapes(ckpt)
        verified = os.path.join(private, "verified.pt")
        torch.save(ckpt, verified)
        del ckpt  # the verified file is all that is kept
        if local != source:
            os.remove(local)
        yield VerifiedCheckpoint(source, verified, shapes)


def check_shapes(found: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """One line naming the first key whose checkpoint shape differs from the model's (tensors or shapes), where
    ``load_state_dict`` would list every mismatch over many lines."""
    for k, got in found.items():
        if k not in expected:
            continue
        got, want = tuple(getattr(got, "shape", got)), tuple(getattr(expected[k], "shape", expected[k]))
        if got != want:
            raise ConfigError(f"{where}: {k} has shape {got} in the checkpoint but {want} in the model; the "
                              f"checkpoint is of another model size (check the model preset / config)")


def warn_trusted(path: str | os.PathLike[str], key: str = "trust_checkpoint") -> None:
    """The warning every route logs when the user's ``key=true`` lets a checkpoint be unpickled unchecked."""
    log.warning("%s=true: %s is unpickled without checks; a crafted file can run code", key, path)
