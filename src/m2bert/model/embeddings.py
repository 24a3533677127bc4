"""Token embeddings: word + learned absolute position + token type, LayerNorm, dropout."""
from __future__ import annotations

import torch
import torch.nn as nn

from m2bert.config import M2BertConfig
from m2bert.model.dropout import Dropout


class M2BertEmbeddings(nn.Module):
    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, h) if config.use_positional_encodings else None
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        seqlen = input_ids.shape[1]
        x = self.word_embeddings(input_ids)
        if token_type_ids is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        else:
            x = x + self.token_type_embeddings.weight[0]
        if self.position_embeddings is not None:
            if seqlen > self.position_embeddings.num_embeddings:
                raise ValueError(
                    f"input length {seqlen} exceeds max_position_embeddings={self.position_embeddings.num_embeddings}"
                )
            x = x + self.position_embeddings.weight[:seqlen]
        return self.dropout(self.norm(x))
