"""How much of its context a masked language model uses, measured on held-out rows.

The MLM loss alone cannot tell a model that reads the whole row from one that reads a few neighbours: an M2
whose long filters collapsed still beats BERT's loss early on through its 3-tap short convolutions. So the same
masked tokens are scored three ways: with the full row, with the row cut into independent ``window``-token
pieces, and with every token right of the scored one hidden. The gains (loss without the context − loss with
it, in nats) say how much the model draws from beyond ``window`` tokens and from the right. BERT is measured
the same way, so the two compare.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = -100


def _nll(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> float:
    """Summed cross-entropy over the labelled positions (the model decodes only those)."""
    out = model(input_ids=ids, attention_mask=mask, labels=labels, return_dict=True)
    return float(F.cross_entropy(out["logits"].float(), out["masked_labels"], reduction="sum"))


def _windows(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, window: int, pad_id: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows cut into independent ``window``-token rows (the tail padded), all-padding pieces dropped."""
    rows, length = ids.shape
    extra = -length % window
    if extra:
        ids = F.pad(ids, (0, extra), value=pad_id)
        mask = F.pad(mask, (0, extra), value=0)
        labels = F.pad(labels, (0, extra), value=IGNORE)
    ids, mask, labels = (t.reshape(-1, window) for t in (ids, mask, labels))
    keep = mask.sum(1) > 0
    return ids[keep], mask[keep], labels[keep]


def _left_only(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, pad_id: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One row per masked token: its row with every position right of it padded (masked out), only it labelled."""
    row, pos = (labels != IGNORE).nonzero(as_tuple=True)
    visible = torch.arange(ids.shape[1], device=ids.device)[None, :] <= pos[:, None]
    new_ids = torch.where(visible, ids[row], torch.full_like(ids[row], pad_id))
    new_labels = torch.full_like(labels[row], IGNORE)
    new_labels[torch.arange(len(row), device=ids.device), pos] = labels[row, pos]
    return new_ids, mask[row] * visible, new_labels


@torch.no_grad()
def context_use(model: nn.Module, batches: Iterable[dict[str, Any]], rows: int = 64, window: int = 8,
                chunk: int = 256) -> dict[str, float]:
    """Held-out loss (nats per masked token) with the full rows, in independent ``window``-token pieces and with
    the right context hidden, over the first ``rows`` rows of ``batches`` (MLM batches: input_ids,
    attention_mask, labels), and the two gains. ``model``: an M2BertForMaskedLM or BertBaselineForMaskedLM."""
    was_training = model.training
    model.eval()
    pad_id = int(getattr(model.config, "pad_token_id", None) or 0)
    sums = {"full": 0.0, "window": 0.0, "left_only": 0.0}
    tokens, seen = 0, 0
    device = next(model.parameters()).device
    try:
        for batch in batches:
            if seen >= rows:
                break
            take = rows - seen
            ids, mask, labels = (batch[k][:take].to(device) for k in ("input_ids", "attention_mask", "labels"))
            seen += ids.shape[0]
            tokens += int((labels != IGNORE).sum())
            sums["full"] += _nll(model, ids, mask, labels)
            sums["window"] += _nll(model, *_windows(ids, mask, labels, window, pad_id))
            left = _left_only(ids, mask, labels, pad_id)
            for start in range(0, left[0].shape[0], chunk):
                sums["left_only"] += _nll(model, *(t[start:start + chunk] for t in left))
    finally:
        model.train(was_training)
    if tokens == 0:
        raise ValueError("context_use: the batches hold no masked tokens")
    loss = {k: v / tokens for k, v in sums.items()}
    return {
        "loss_full": round(loss["full"], 4),
        f"loss_window{window}": round(loss["window"], 4),
        "loss_left_only": round(loss["left_only"], 4),
        "gain_window": round(loss["window"] - loss["full"], 4),
        "gain_right": round(loss["left_only"] - loss["full"], 4),
        "window": window,
        "rows": seen,
        "masked_tokens": tokens,
    }
