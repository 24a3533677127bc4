"""Dropout with a cheaper mask on CPU: 16 random bits per element instead of a Bernoulli draw.

``torch.bernoulli_`` on CPU draws one random number per element; on a training step of M2-BERT-base (batch 16 x
128) its draws were ~10% of the step (bench/results/profile_train_cpu.txt). Here one 64-bit draw serves four
elements: keep where a 16-bit slice of it is at or above p's quantile, so p is rounded to a multiple of 1/65536
(0.1 -> 0.100006) and the kept values are scaled by 1/(1-p), as ``F.dropout`` scales them. The draws differ from
``F.dropout``'s, so the same seed gives a different (equally random, equally reproducible) mask; the backward saves
a bool mask (1 byte per element instead of ``F.dropout``'s 4). Elsewhere (GPU, under torch.compile, whose own
dropout is already fused) it is ``F.dropout``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_BITS = 16


def keep_mask(shape: torch.Size, p: float, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """A bool mask of ``shape``, True with probability 1 - p (p in multiples of 2**-16), from the default generator."""
    numel = shape.numel()
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None, generator=generator)
    threshold = -(2 ** (_BITS - 1)) + round(p * 2**_BITS)  # P(int16 >= threshold) = 1 - threshold's quantile
    return words.view(torch.int16)[:numel].view(shape) >= threshold


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with :func:`keep_mask`'s mask on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, True)
    return torch.where(keep_mask(x.shape, p, x.device), x, 0.0).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same state, same repr) computed by :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
