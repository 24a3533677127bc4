"""The Transformer baseline's MLM: transformers' ``BertForMaskedLM`` with M2-BERT's training contract.

Given ``labels`` it decodes only the masked positions (labels != -100) and returns their loss, logits
and targets as an ``M2MaskedLMOutput``, exactly as ``M2BertForMaskedLM`` does, so both models train
through one Composer wrapper and compare at equal cost. The loss is ``masked_lm_loss``: 0.0, not NaN,
for a batch without masked tokens. Without labels it is transformers' model unchanged.
"""
from __future__ import annotations

import os

import torch
from transformers import BertForMaskedLM

from m2bert.model.heads import M2MaskedLMOutput, decode_masked


class BertBaselineForMaskedLM(BertForMaskedLM):
    """Weights, config and export are transformers' ``BertForMaskedLM``; only the training forward differs."""

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> M2MaskedLMOutput | tuple:
        kwargs = dict(attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
                      head_mask=head_mask, inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                      encoder_attention_mask=encoder_attention_mask, output_attentions=output_attentions,
                      output_hidden_states=output_hidden_states)
        if labels is None:
            return super().forward(input_ids, return_dict=return_dict, **kwargs)
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        out = self.bert(input_ids, return_dict=True, **kwargs)
        loss, logits, positions, targets = decode_masked(self.cls, out.last_hidden_state, labels)
        if not return_dict:
            return tuple(v for v in (loss, logits, out.hidden_states) if v is not None)
        return M2MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, masked_positions=positions,
                                masked_labels=targets)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: object, **kwargs: object) -> None:
        """Export as transformers' ``BertForMaskedLM`` (same weights and config): ``config.json`` names that
        class, so the export loads without m2bert, as the baseline's exports always have."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.config.architectures = [BertForMaskedLM.__name__]
            self.config.save_pretrained(save_directory)
