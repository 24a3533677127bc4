"""Kernel tests run the Triton kernels on CPU with the Triton interpreter (``TRITON_INTERPRET=1``).

Triton reads the variable when it is first imported, so these tests only run in a process
started with it: ``tests/test_kernels.py`` launches ``pytest tests/kernels`` in a subprocess
with it set (that is how ``make test`` runs them); without it this folder is not collected.
"""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


# Without the interpreter from process start, the folder is not collected (tests/test_kernels.py runs it).
collect_ignore_glob = [] if INTERPRETED else ["test_*.py"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| relative to the output scale max |b|."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# Tolerances, relative to the output scale (max |reference|).
FP32_TOL = 1e-4
# bf16 inputs: the kernels compute in fp32 and round once on output; the bf16 PyTorch reference
# rounds after every op. Both are compared with fp64 math on the same (bf16-rounded) inputs, and
# the kernels must be within this bound (bf16 has 8 mantissa bits: eps = 7.8e-3).
BF16_TOL = 2e-2


def pytest_configure(config):
    # The interpreter (triton 3.3) indexes with 0-d numpy arrays, which numpy ≥ 1.25 warns about.
    config.addinivalue_line("filterwarnings", "ignore:Conversion of an array with ndim > 0:DeprecationWarning")
