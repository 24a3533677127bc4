"""Loads a kernel module (``_<name>_triton.py``) compiled or interpreted, on first use.

Triton 3.3 reads ``TRITON_INTERPRET`` when ``@triton.jit`` decorates a function, not when the
kernel runs, and that includes triton.language's own helpers, decorated when triton is first
imported (which ``import torch``/``transformers`` may already do). So the interpreter works
only with the variable set before Python starts; the kernel tests therefore run in a
subprocess (tests/kernels/test_switch.py). Here the kernel files are executed lazily, on first use
(package import must not touch a Triton driver), once per mode under their own module name,
with the variable pinned for the duration of that import.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

_LOCK = threading.Lock()
_CACHE: dict[tuple[str, bool], ModuleType] = {}

NEEDS_GPU = "kernels: triton needs a CUDA GPU or TRITON_INTERPRET=1 (the Triton interpreter, for tests on CPU)"


def interpreting() -> bool:
    """True when the environment asks for the Triton interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_interpreter() -> None:
    # The interpreter runs triton.language's own @jit helpers (tl.zeros, ...) as interpreted
    # functions only if TRITON_INTERPRET=1 was set when triton itself was imported.
    import triton.language.standard as std
    from triton.runtime.jit import JITFunction

    if isinstance(std.zeros, JITFunction):
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton had been imported; the Triton interpreter needs it "
            "in the environment before Python starts (e.g. TRITON_INTERPRET=1 python -m pytest tests/kernels)"
        )


def _load(name: str, interpret: bool) -> ModuleType:
    key = (name, interpret)
    if interpret:
        _check_interpreter()
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        path = Path(__file__).with_name(f"_{name}_triton.py")
        modname = f"m2bert.kernels._{name}_triton" + ("_interpreted" if interpret else "")
        old = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
        try:
            spec = importlib.util.spec_from_file_location(modname, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module  # inspect.getsource (used by @triton.jit) looks here
            spec.loader.exec_module(module)
        finally:
            if old is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = old
        _CACHE[key] = module
        return module


def kernel_module(name: str, device: torch.device) -> tuple[ModuleType, bool]:
    """The kernel module for tensors on ``device`` and whether it is interpreted.

    CUDA tensors get compiled kernels (interpreted ones if ``TRITON_INTERPRET=1``); CPU tensors
    only the interpreter, and a clear error without it.
    """
    interpret = interpreting()
    if device.type != "cuda" and not interpret:
        raise RuntimeError(NEEDS_GPU)
    return _load(name, interpret), interpret
