"""m2bert: pretrain and fine-tune Monarch Mixer BERT (Fu et al., NeurIPS 2023).

``import m2bert`` is light: the classes below load on first use (``m2bert.M2BertModel``), so the console
scripts parse their arguments (and answer ``--help``) before torch is imported. transformers' ``Auto*``
factories learn our classes once transformers is imported, before or after m2bert (``m2bert.auto``).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from m2bert.auto import register_when_transformers_loads

if TYPE_CHECKING:
    from m2bert.config import M2BertConfig
    from m2bert.model import M2BertForMaskedLM, M2BertForSequenceClassification, M2BertModel, param_groups

__version__ = "0.1.0"

_LAZY = {"M2BertConfig": "m2bert.config", "M2BertForMaskedLM": "m2bert.model",
         "M2BertForSequenceClassification": "m2bert.model", "M2BertModel": "m2bert.model",
         "param_groups": "m2bert.model"}


def __getattr__(name: str) -> Any:
    """The model classes, imported (with torch) when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'm2bert' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


register_when_transformers_loads()

__all__ = [
    "M2BertConfig",
    "M2BertForMaskedLM",
    "M2BertForSequenceClassification",
    "M2BertModel",
    "param_groups",
]
