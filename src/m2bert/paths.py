"""Where the read-only ``shared`` folder is: ``../shared`` beside the repository, holding real data (GLUE, a C4
sample, WikiText-2, BERT's vocabulary), the original implementation's golden outputs and published numbers.
Tests, benchmarks and the quality study find it through :func:`shared_dir`, and only through it.
"""
from __future__ import annotations

from pathlib import Path


def shared_dir() -> Path:
    """``shared`` beside the repository this package runs from (``<repo>/src/m2bert`` → ``<repo>/../shared``),
    else beside the working directory (an installed package). It may be absent: callers name what they need."""
    beside_repo = Path(__file__).resolve().parents[2].parent / "shared"
    beside_cwd = Path.cwd().resolve().parent / "shared"
    return beside_cwd if not beside_repo.is_dir() and beside_cwd.is_dir() else beside_repo
