"""Task heads: the MLM head (decoder tied to the word embeddings) and the classification head."""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers.activations import ACT2FN

from m2bert.config import M2BertConfig


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


class ClassificationHead(nn.Module):
    """Pooler (dense + tanh over [CLS] or the mean of real tokens), dropout, linear."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.pooling = config.pooling
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            m = attention_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return torch.tanh(self.pooler(pooled))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(hidden, attention_mask)))
