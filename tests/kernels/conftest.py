"""All the kernel tests. Most run the Triton kernels on CPU with the Triton interpreter (``TRITON_INTERPRET=1``).

Triton reads the variable when it is first imported, so the files in :data:`INTERPRETED` only
run in a process started with it: ``test_switch.py`` launches ``pytest tests/kernels`` in a
subprocess with it set (that is how ``make test`` runs them), and there only those files are
collected. The other files run in the ordinary process (the switch, the import rules, the kernels
compiled for a GPU without one, and ``test_gpu.py``, which needs a GPU).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from m2bert.model.kernel_selfcheck import rel_err  # noqa: F401  (max |a − b| / max |b|, as the self-check measures)

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
# The files that need the interpreter from process start (test_switch.py runs them in a subprocess).
INTERPRETED = ("test_blockdiag_glu.py", "test_seq_mixer_conv.py", "test_model_kernels.py", "test_selfcheck.py")
# Each process collects its own half; a file named on the command line is collected regardless.
collect_ignore = list(INTERPRETED) if not INTERPRETING else [
    p.name for p in Path(__file__).parent.glob("test_*.py") if p.name not in INTERPRETED]


ROOT = Path(__file__).resolve().parents[2]


def run_python(args: list[str], env_extra: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repository root, with ``env_extra`` over this environment (e.g. TRITON_INTERPRET)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**os.environ, **env_extra}, capture_output=True,
                          text=True, timeout=timeout)


# Tolerances, relative to the output scale (max |reference|).
FP32_TOL = 1e-4
# bf16 inputs: the kernels compute in fp32 and round once on output; the bf16 PyTorch reference
# rounds after every op. Both are compared with fp64 math on the same (bf16-rounded) inputs, and
# the kernels must be within this bound (bf16 has 8 mantissa bits: eps = 7.8e-3).
BF16_TOL = 2e-2


def pytest_configure(config):
    # The interpreter (triton 3.3) indexes with 0-d numpy arrays, which numpy ≥ 1.25 warns about.
    config.addinivalue_line("filterwarnings", "ignore:Conversion of an array with ndim > 0:DeprecationWarning")
