"""Optimizer parameter groups with the original's special rates for the implicit filters."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from m2bert.model.implicit_filter import ImplicitFilter


def param_groups(model: nn.Module, weight_decay: float | None = None, decoupled: bool = False) -> list[dict[str, Any]]:
    """Three groups: everything else (optimizer defaults), the implicit-filter MLPs and their
    shared sine frequency (``long_conv_kernel_learning_rate``, ``hyena_wd``), and the filters'
    positional features ``z`` (``hyena_lr_pos_emb``, no weight decay).

    The original tags only the forward filter MLP with the filter rate (an oversight: the
    reverse MLP shares its role); here both directions train alike. The filter skip weight
    ``bias`` stays in the default group, as in the original.

    ``hyena_wd`` is an AdamW-style coefficient (Hyena's): the per-step decay is lr · wd = 1e-4.
    Composer's DecoupledAdamW takes the per-step factor itself, so with ``decoupled=True`` the
    group gets lr · hyena_wd. Passing 0.1 there multiplies the filter weights (and the sine
    frequency) by 0.9 every step: we measured the implicit filters collapsing to ~1e-9 within
    400 steps, leaving a purely local model.
    """
    config = model.config  # type: ignore[attr-defined]
    filter_params, pos_params = [], []
    for module in model.modules():
        if isinstance(module, ImplicitFilter):
            pos_params.append(module.z)
            filter_params.append(module.freq)
            for mlp in (module.mlp_fwd, module.mlp_rev):
                if mlp is not None:
                    filter_params.extend(mlp.parameters())
    special = {id(p) for p in filter_params + pos_params}
    default = [p for p in model.parameters() if p.requires_grad and id(p) not in special]
    groups: list[dict[str, Any]] = [{"params": default}]
    if weight_decay is not None:
        groups[0]["weight_decay"] = weight_decay
    if filter_params:
        filter_lr = config.long_conv_kernel_learning_rate
        filter_wd = config.hyena_wd * filter_lr if decoupled else config.hyena_wd
        groups.append({"params": filter_params, "lr": filter_lr, "weight_decay": filter_wd})
    if pos_params:
        groups.append({"params": pos_params, "lr": config.hyena_lr_pos_emb, "weight_decay": 0.0})
    return groups
