"""The ``compile`` speed switch: torch.compile (inductor) for training, fine-tuning and benchmarks.

``auto`` compiles on CUDA and not on CPU. Measured on the 2-core CPU we develop on: compiling
m2-bert-base-80m's training step takes about 2 minutes and then makes M2 ~1.2× faster, which
pays back only after several hundred steps, more than a test, the demo or a short fine-tuning
job takes; on a GPU the fusions save memory traffic from the first minutes of any real run.
``true`` / ``false`` force it either way.

The model is graph-break free under dynamo (tests/test_compile.py). The one data-dependent
operation, selecting the masked positions for the MLM decoder (``nonzero``), is kept: dynamo
traces it with ``capture_dynamic_output_shape_ops`` (set here), so the decoder still runs only
on the ~30% masked tokens; computing it on every token would cost ~30% more FLOPs at L = 128.

Compiled code is cached on disk where a rerun finds it: inductor's FX-graph/kernel cache in
``$TORCHINDUCTOR_CACHE_DIR`` and Triton's in ``$TRITON_CACHE_DIR``; when unset, both go under
``~/.cache/m2bert/`` (torch's own default is under /tmp, which a reboot or a container clears).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from m2bert.options import ConfigError

log = logging.getLogger(__name__)

CHOICES = ("auto", "true", "false")


def normalize(value: Any, key: str = "impl.compile") -> str:
    """``auto`` | ``true`` | ``false`` (Hydra may hand a bool or its str, e.g. ``True``)."""
    text = str(value).strip().lower()
    if text not in CHOICES:
        raise ConfigError(f"{key}={value!r}; choose one of {', '.join(CHOICES)}")
    return text


def wanted(value: Any, device: str | torch.device, key: str = "impl.compile") -> bool:
    """Whether to compile on ``device`` (``gpu``/``cuda``… or ``cpu``): ``auto`` means on CUDA only."""
    choice = normalize(value, key)
    if choice != "auto":
        return choice == "true"
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    return kind in ("gpu", "cuda")


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "m2bert"


def prepare() -> None:
    """Persistent caches (unless the user chose theirs) and the dynamo settings the model needs."""
    root = cache_root()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    import torch._dynamo

    # The MLM decoder's masked positions (nonzero) have a data-dependent count: trace it, no graph break.
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    log.info("torch.compile on (inductor); caches: %s, %s",
             os.environ["TORCHINDUCTOR_CACHE_DIR"], os.environ["TRITON_CACHE_DIR"])


def composer_compile_config(value: Any, device: str, key: str = "impl.compile") -> dict[str, Any] | None:
    """Composer Trainer's ``compile_config``: ``{}`` (torch.compile's defaults) or None (eager)."""
    if not wanted(value, device, key):
        return None
    prepare()
    return {}


def compile_module(module: torch.nn.Module, **kwargs: Any) -> Any:
    """torch.compile with :func:`prepare` done (for code that runs outside Composer's Trainer)."""
    prepare()
    return torch.compile(module, **kwargs)


def _callback_base() -> type:
    from composer.core import Callback

    return Callback


class CompileTimer(_callback_base()):  # type: ignore[misc]
    """Logs how long the first training (and evaluation) batch took: where compilation happens."""

    def __init__(self) -> None:
        self._t0: dict[str, float] = {}
        self._done: set[str] = set()

    def _start(self, what: str) -> None:
        if what not in self._done:
            self._t0[what] = time.perf_counter()

    def _end(self, what: str) -> None:
        if what in self._t0 and what not in self._done:
            self._done.add(what)
            log.info("torch.compile: first %s took %.1f s (compilation included)", what,
                     time.perf_counter() - self._t0.pop(what))

    def batch_start(self, state: Any, logger: Any) -> None:
        self._start("step")

    def batch_end(self, state: Any, logger: Any) -> None:
        self._end("step")

    def eval_batch_start(self, state: Any, logger: Any) -> None:
        self._start("eval batch")

    def eval_batch_end(self, state: Any, logger: Any) -> None:
        self._end("eval batch")
