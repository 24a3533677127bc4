"""One sequence vector from the encoder's hidden states: the classifier's pooler and the sentence embedding
both read it here, so the two poolings (``cls`` | ``mean``) are defined once."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(B, L, H) → (B, H): the first ([CLS]) token, or the mean over real tokens (``attention_mask == 1``).

    The mean ignores padded positions, as the original's ``pool_all`` pooler does; a row with no real token
    divides by 1 (its sum is 0), never by 0."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise ValueError(f"pooling={pooling!r}; choose cls or mean")
    if attention_mask is None:
        return hidden.mean(dim=1)
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def sentence_embedding(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str,
                       normalize: bool, pooler: torch.nn.Module | None = None) -> torch.Tensor:
    """The pooled vector, through ``pooler`` (the original's dense + tanh) when given, L2-normalised on request
    (cosine similarity is then a dot product)."""
    vec = pool(hidden, attention_mask, pooling)
    if pooler is not None:
        vec = torch.tanh(pooler(vec))
    return F.normalize(vec, p=2, dim=-1) if normalize else vec
