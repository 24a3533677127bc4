"""Optimizer parameter groups: the implicit filters' own learning rates and weight decay.

How the filters are grouped and decayed decides whether M2's long convolutions survive training
(README, "The filters' recipe"), so it is a named choice, :class:`m2bert.options.FilterDecay`.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from m2bert.model.implicit_filter import ImplicitFilter
from m2bert.options import FilterDecay


def filter_parameters(model: nn.Module, filter_decay: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the filter group's parameters, the positional features ``z``) of every implicit filter.

    ``original`` takes what the original tags: ``HyenaFilter.__init__`` (bert/src/mm/hyena_utils.py) sets
    ``_optim`` on every child of ``implicit_filter``, the forward MLP's Linear layers and the ``Sin`` module whose
    ``freq`` the reverse MLP shares; ``implicit_filter_rev`` and the skip weight ``bias`` are untagged, so they
    train in the default group. ``weak`` adds the reverse MLP. ``z`` is registered with ``lr=lr_pos_emb, wd=0``
    (``OptimModule.register``) in both.
    """
    chosen, pos = [], []
    for module in model.modules():
        if isinstance(module, ImplicitFilter):
            pos.append(module.z)
            chosen.append(module.freq)
            chosen.extend(module.mlp_fwd.parameters())
            if filter_decay == FilterDecay.weak and module.mlp_rev is not None:
                chosen.extend(module.mlp_rev.parameters())
    return chosen, pos


def param_groups(model: nn.Module, weight_decay: float | None = None, decoupled: bool = False,
                 filter_decay: str = "original") -> list[dict[str, Any]]:
    """Three groups: everything else (the optimizer's defaults), the implicit filters (lr
    ``long_conv_kernel_learning_rate``, weight decay from ``hyena_wd``), and the filters' positional features
    ``z`` (lr ``hyena_lr_pos_emb``, no weight decay).

    ``filter_decay`` (:class:`m2bert.options.FilterDecay`): ``original`` hands ``hyena_wd`` to the optimizer as
    is (create_param_groups.py does), so Composer's DecoupledAdamW, which takes the per-step factor itself,
    multiplies the filters by 1 - hyena_wd = 0.9 every step at the peak lr; ``weak`` reads ``hyena_wd`` as an
    AdamW coefficient (Hyena's): per-step decay lr · hyena_wd = 1e-4 under either optimizer.
    """
    if filter_decay not in tuple(FilterDecay):
        raise ValueError(f"filter_decay={filter_decay!r}; choose one of {[c.value for c in FilterDecay]}")
    config = model.config  # type: ignore[attr-defined]
    filter_params, pos_params = filter_parameters(model, str(filter_decay))
    special = {id(p) for p in filter_params + pos_params}
    default = [p for p in model.parameters() if p.requires_grad and id(p) not in special]
    groups: list[dict[str, Any]] = [{"params": default}]
    if weight_decay is not None:
        groups[0]["weight_decay"] = weight_decay
    if filter_params:
        filter_lr = config.long_conv_kernel_learning_rate
        filter_wd = config.hyena_wd * filter_lr if decoupled and filter_decay == FilterDecay.weak else config.hyena_wd
        groups.append({"params": filter_params, "lr": filter_lr, "weight_decay": filter_wd})
    if pos_params:
        groups.append({"params": pos_params, "lr": config.hyena_lr_pos_emb, "weight_decay": 0.0})
    return groups
