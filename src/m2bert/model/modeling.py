"""M2-BERT: embeddings → N × (sequence mixer → dimension mixer) → task head.

The classes are Hugging Face ``PreTrainedModel`` subclasses, so ``save_pretrained`` /
``from_pretrained`` and the ``Auto*`` factories work on our directories (safetensors).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from m2bert.config import M2BertConfig
from m2bert.model.dimension_mixer import MonarchMLP
from m2bert.model.embeddings import M2BertEmbeddings
from m2bert.model.implicit_filter import ImplicitFilter
from m2bert.model.heads import ClassificationHead, M2MaskedLMOutput, MLMHead, decode_masked
from m2bert.model.inputs import check_shapes, check_values, should_check_values
from m2bert.model.monarch import BlockdiagLinear
from m2bert.model.pooling import sentence_embedding
from m2bert.model.sequence_mixer import MonarchSequenceMixer


class M2BertLayer(nn.Module):
    """One M2 block. As in the original, the residual path runs through the residual long
    convolution inside the sequence mixer and the post-LN residual of the dimension mixer."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.sequence_mixer = MonarchSequenceMixer(config)
        self.dimension_mixer = MonarchMLP(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.dimension_mixer(self.sequence_mixer(hidden, mask))


class M2BertPreTrainedModel(PreTrainedModel):
    config_class = M2BertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's init (as the original applies it: every nn.Linear, implicit-filter MLPs included).
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()
        elif isinstance(module, BlockdiagLinear):
            module.reset_parameters()
        elif isinstance(module, ImplicitFilter) and module.init_scale != 1.0:
            # Applied after the filter's own Linear layers (``apply`` visits children first): scales the filters.
            for mlp in (module.mlp_fwd, module.mlp_rev):
                if mlp is not None:
                    mlp[-1].weight.data.mul_(module.init_scale)


@dataclass
class M2BertModelOutput(BaseModelOutput):
    """The encoder's output; ``sentence_embedding`` (B, H) when the config's ``sentence_embedding`` (or the
    ``return_sentence_embedding`` argument) asks for it, as the original's ``gather_sentence_embeddings``."""

    sentence_embedding: torch.Tensor | None = None


class M2BertModel(M2BertPreTrainedModel):
    """The encoder: returns ``last_hidden_state`` (and all hidden states, and the sentence embedding, on request)."""

    def __init__(self, config: M2BertConfig, add_pooler: bool = True) -> None:
        super().__init__(config)
        self.embeddings = M2BertEmbeddings(config)
        self.layers = nn.ModuleList(M2BertLayer(config) for _ in range(config.num_hidden_layers))
        # The original's BertPooler (dense; tanh in sentence_embedding), read only by the sentence embedding; the
        # task models leave it out (add_pooler=False): they return no sentence embedding and DDP wants no idle weights.
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if config.embedding_pooler and add_pooler else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_sentence_embedding: bool | None = None,
        **kwargs: object,
    ) -> M2BertModelOutput | tuple:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if return_sentence_embedding is None:
            return_sentence_embedding = self.config.sentence_embedding
        check_shapes(input_ids, attention_mask, token_type_ids)
        if should_check_values(self.config.check_inputs, input_ids):
            check_values(input_ids, attention_mask, token_type_ids, self.config.vocab_size, self.config.type_vocab_size)
        hidden = self.embeddings(input_ids, token_type_ids)
        # Padding invariance: zero padded positions before each convolution (no host sync).
        mask = None
        if attention_mask is not None and self.config.padding_invariant:
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        all_hidden = [hidden] if output_hidden_states else None
        for layer in self.layers:
            hidden = layer(hidden, mask)
            if all_hidden is not None:
                all_hidden.append(hidden)
        hidden_states = tuple(all_hidden) if all_hidden is not None else None
        embedding = None
        if return_sentence_embedding:
            embedding = sentence_embedding(hidden, attention_mask, self.config.pooling, self.config.normalize_embeddings,
                                           self.pooler)
        if not return_dict:
            return tuple(v for v in (hidden, hidden_states, embedding) if v is not None)
        return M2BertModelOutput(last_hidden_state=hidden, hidden_states=hidden_states, sentence_embedding=embedding)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H) sentence embeddings as the config defines them (``pooling``, ``normalize_embeddings``), whatever
        ``sentence_embedding`` says. Inputs need no padding to the maximum length: with ``padding_invariant``
        (the default) a row's embedding does not depend on how far the batch is padded."""
        out = self.forward(input_ids, attention_mask, token_type_ids, return_dict=True, return_sentence_embedding=True)
        return out.sentence_embedding

    @classmethod
    def from_original_checkpoint(cls, path: str | os.PathLike, config: M2BertConfig | dict[str, Any] | None = None,
                                 padding_invariant: bool = False) -> "M2BertModel":
        """The encoder of an original checkpoint: a Composer ``.pt`` file, or a Hugging Face directory as the
        released retrieval models ship (``config.json`` with the original's fields, ``model.safetensors`` or
        ``pytorch_model.bin``). An MLM or classifier head in the file is skipped (logged)."""
        from m2bert.model.original import load_original_checkpoint

        return load_original_checkpoint(cls, path, config, padding_invariant=padding_invariant)


class M2BertForMaskedLM(M2BertPreTrainedModel):
    """The MLM. Given ``labels``, it decodes only the masked positions and returns their loss, logits and
    targets (``M2MaskedLMOutput``): the Composer wrapper and any other trainer need nothing else."""

    # A dict (transformers 5 needs target → source; 4.x iterates the keys): the decoder is the word embeddings.
    _tied_weights_keys = {"mlm_head.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__(config)
        self.bert = M2BertModel(config, add_pooler=False)
        self.mlm_head = MLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.mlm_head.decoder = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: object,
    ) -> M2MaskedLMOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_shapes(input_ids, attention_mask, token_type_ids, labels)
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states, return_dict=True,
                        return_sentence_embedding=False)
        loss = positions = targets = None
        if labels is None:
            logits = self.mlm_head(out.last_hidden_state)
        else:
            loss, logits, positions, targets = decode_masked(self.mlm_head, out.last_hidden_state, labels)
        if not return_dict:
            return tuple(v for v in (loss, logits, out.hidden_states) if v is not None)
        return M2MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, masked_positions=positions,
                                masked_labels=targets)

    @classmethod
    def from_original_checkpoint(cls, path: str | os.PathLike, config: M2BertConfig | dict[str, Any] | None = None,
                                 padding_invariant: bool = False) -> "M2BertForMaskedLM":
        """Load an original M2-BERT Composer checkpoint (``state.model`` with ``model.bert.*``) or a Hugging Face
        directory of one (see ``M2BertModel.from_original_checkpoint``)."""
        from m2bert.model.original import load_original_checkpoint

        return load_original_checkpoint(cls, path, config, padding_invariant=padding_invariant)


class M2BertForSequenceClassification(M2BertPreTrainedModel):
    """Classification (or regression when ``num_labels == 1``, e.g. STS-B) on the pooled output.

    With ``labels`` the loss is transformers' convention for ``BertForSequenceClassification``: cross-entropy
    over integer class ids, or MSE against float scores when ``num_labels == 1``; always float32 (as
    autocast computes both), so bf16 logits do not round the loss."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__(config)
        self.bert = M2BertModel(config, add_pooler=False)
        self.head = ClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: object,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states, return_dict=True,
                        return_sentence_embedding=False)
        logits = self.head(out.last_hidden_state, attention_mask)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        if not return_dict:
            return tuple(v for v in (loss, logits, out.hidden_states) if v is not None)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)

    @classmethod
    def from_original_checkpoint(cls, path: str | os.PathLike, config: M2BertConfig | dict[str, Any] | None = None,
                                 padding_invariant: bool = False) -> "M2BertForSequenceClassification":
        """Load an original M2-BERT checkpoint (MLM or classification; a file or a Hugging Face directory) into a
        classifier. An MLM checkpoint fills the encoder and leaves the new head freshly initialised.
        """
        from m2bert.model.original import load_original_checkpoint

        return load_original_checkpoint(cls, path, config, padding_invariant=padding_invariant)
