"""Composer's DecoupledAdamW with its update done by ``torch._foreach_*`` ops, one call per operation per group.

Composer's ``DecoupledAdamW.adamw`` loops over the parameters in Python: ~10 small operator calls and a
``.item()`` per parameter, so M2-BERT-base, with its many small filter and bias tensors, pays ~2,000 dispatches
per step for an update whose arithmetic is tiny (bench/profile_train.py). This does the same arithmetic, in the
same order and precision, on lists of tensors: the result is the same to the last bit on CPU (a test holds it to
1e-7 against Composer's).
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from composer.optim import DecoupledAdamW


class ForeachDecoupledAdamW(DecoupledAdamW):
    """DecoupledAdamW (same hyper-parameters, state and ``state_dict``) with a ``foreach`` update.

    Its ``__qualname__`` stays ``DecoupledAdamW`` because Composer files an optimizer's state in a checkpoint under
    the class's qualname: checkpoints written with either class resume with the other.
    """

    @staticmethod
    def adamw(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
              exp_avg_sqs: list[torch.Tensor], max_exp_avg_sqs: list[torch.Tensor], state_steps: list[torch.Tensor],
              *, amsgrad: bool, beta1: float, beta2: float, lr: float, initial_lr: float, weight_decay: float,
              eps: float) -> None:
        """Composer's update, per group of parameters at the same step (one group unless parameters joined late)."""
        if amsgrad or not params:  # amsgrad: rare, left to Composer's loop
            DecoupledAdamW.adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad=amsgrad,
                                 beta1=beta1, beta2=beta2, lr=lr, initial_lr=initial_lr, weight_decay=weight_decay,
                                 eps=eps)
            return
        by_step: dict[tuple[float, torch.device, torch.dtype], list[int]] = defaultdict(list)
        step_values = torch.stack([s.to(torch.float32) for s in state_steps]).tolist()  # one host sync, not one each
        for i, step in enumerate(step_values):
            by_step[(step, params[i].device, params[i].dtype)].append(i)
        for (step, _, _), idx in by_step.items():
            p = [params[i] for i in idx]
            g = [grads[i] for i in idx]
            m = [exp_avgs[i] for i in idx]
            v = [exp_avg_sqs[i] for i in idx]
            if weight_decay != 0:
                decay_factor = (lr / initial_lr) if initial_lr else 1.0
                torch._foreach_mul_(p, 1 - decay_factor * weight_decay)
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            torch._foreach_mul_(m, beta1)
            torch._foreach_add_(m, g, alpha=1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, g, g, value=1 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, math.sqrt(bias_correction2))
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(p, m, denom, value=-lr / bias_correction1)


ForeachDecoupledAdamW.__qualname__ = DecoupledAdamW.__qualname__
