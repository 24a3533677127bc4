"""Task heads: the MLM head (decoder tied to the word embeddings) with its masked-positions-only
decoding and loss (shared by M2 and the BERT baseline), and the classification head."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from m2bert.config import M2BertConfig
from m2bert.model.dropout import Dropout
from m2bert.model.pooling import pool


class MLMHead(nn.Module):
    """dense → GELU → LayerNorm → decoder (weight tied to the word embeddings, own bias)."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens (float32); 0.0 (still in the graph, zero gradients) when a
    batch has none. transformers returns NaN there (a mean over nothing), which turns the logged loss, and a
    gradient-clipping norm, into NaN; a batch without a masked token simply has nothing to learn. The
    count is known on the host already (``nonzero`` chose the positions), so this adds no sync."""
    if targets.numel() == 0:
        return logits.float().sum()
    return F.cross_entropy(logits.float(), targets)


@dataclass
class M2MaskedLMOutput(ModelOutput):
    """``logits`` is (B, L, V) without labels. With labels, the decoder runs only on the masked
    positions (labels != -100), as in the original: ``logits`` is then (n_masked, V),
    ``masked_positions`` holds their flat indices into B·L and ``masked_labels`` their targets,
    so a caller's metrics need nothing but this output. Both MLMs (M2 and the BERT baseline) return it."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    masked_positions: torch.Tensor | None = None
    masked_labels: torch.Tensor | None = None


def decode_masked(head: nn.Module, hidden: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the MLM ``head`` on the masked positions of ``hidden`` (B, L, H) only, and take the loss there:
    (loss, logits (n_masked, V), flat positions into B·L, targets).

    Most of the head's cost (a vocab-sized matmul per token) disappears: with 30% masking, 70% of
    the decoder's work is skipped, as in the original."""
    flat_labels = labels.reshape(-1)
    positions = (flat_labels != -100).nonzero().squeeze(-1)
    if torch.compiler.is_compiling():
        # The count is data-dependent; softmax's decomposition needs to know it is not 0.
        torch._check(positions.shape[0] > 0)
    logits = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions))
    targets = flat_labels.index_select(0, positions)
    return masked_lm_loss(logits, targets), logits, positions, targets


class ClassificationHead(nn.Module):
    """Pooler (dense + tanh over [CLS] or the mean of real tokens), dropout, linear."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.pooling = config.pooling
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return torch.tanh(self.pooler(pool(hidden, attention_mask, self.pooling)))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(hidden, attention_mask)))
