"""Registering our classes with transformers' ``Auto*`` factories without importing torch at ``import m2bert``.

``import m2bert`` must stay light (every console script's ``--help`` runs before torch loads), yet
``import m2bert; AutoModel.from_pretrained("my-m2")`` must work. So the registration runs as soon as both
are there: at once if transformers is already imported, else right after transformers finishes loading
(an import hook, removed after its one use), and always when ``m2bert.model`` is imported. While an
m2bert module is itself half imported (it is the one importing transformers), the registration waits for
``m2bert.config``/``m2bert.model`` to finish, which register at their end (:func:`register_if_pending`).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

_state = {"registered": False, "pending": False}


def register() -> None:
    """Tell transformers' Auto* factories about M2-BERT (imports the model, hence torch)."""
    if _state["registered"]:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    from m2bert.config import M2BertConfig
    from m2bert.model import M2BertForMaskedLM, M2BertForSequenceClassification, M2BertModel

    AutoConfig.register(M2BertConfig.model_type, M2BertConfig, exist_ok=True)
    AutoModel.register(M2BertConfig, M2BertModel, exist_ok=True)
    AutoModelForMaskedLM.register(M2BertConfig, M2BertForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(M2BertConfig, M2BertForSequenceClassification, exist_ok=True)
    _state.update(registered=True, pending=False)


def register_if_pending() -> None:
    """Called at the end of ``m2bert.config``: transformers loaded while an m2bert module was half imported. A
    half-imported ``m2bert.model`` registers at its own end instead (its classes do not exist yet)."""
    if _state["pending"] and not _half_imported("m2bert.model"):
        register()


def _half_imported(prefix: str = "m2bert.") -> bool:
    """Whether a module named ``prefix...`` is being imported right now (its import has not finished)."""
    return any(name.startswith(prefix) and getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items()))


def _after_transformers() -> None:
    if _half_imported():
        _state["pending"] = True  # m2bert.config / m2bert.model register when they finish
    else:
        register()


class _TransformersHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``transformers`` so that :func:`register` follows its import."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            _after_transformers()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]  # this spec's loader only
        return spec


def register_when_transformers_loads() -> None:
    """``import m2bert``'s part: register now if transformers is loaded, else once it is."""
    if "transformers" in sys.modules:
        _after_transformers()
    elif not any(isinstance(f, _TransformersHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TransformersHook())
