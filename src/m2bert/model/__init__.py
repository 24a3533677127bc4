"""The M2-BERT model, split by role: Monarch ops, implicit filter, long conv, the two mixers,
embeddings, heads, and the assembled models."""
from m2bert.model.modeling import (
    M2BertForMaskedLM,
    M2BertForSequenceClassification,
    M2BertLayer,
    M2BertModel,
    M2BertModelOutput,
    M2BertPreTrainedModel,
    M2MaskedLMOutput,
)
from m2bert.auto import register
from m2bert.model.param_groups import param_groups

__all__ = [
    "M2BertForMaskedLM",
    "M2BertForSequenceClassification",
    "M2BertLayer",
    "M2BertModel",
    "M2BertModelOutput",
    "M2BertPreTrainedModel",
    "M2MaskedLMOutput",
    "param_groups",
]

# Our Auto* registration follows the model's import (m2bert.auto: it may have waited for this module).
register()
