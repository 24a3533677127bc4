"""Data pipeline: C4 → MDS shards, the MLM stream, tokenizers, GLUE, and the offline sample.

Submodules are imported lazily by their users (``from m2bert.data.mlm import ...``) so that
``import m2bert.data`` stays cheap and does not pull in ``streaming`` or ``datasets``.
"""
from __future__ import annotations

__all__ = ["convert_c4", "glue_tasks", "mlm", "sample", "tokenizer"]
