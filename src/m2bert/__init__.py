"""m2bert: pretrain and fine-tune Monarch Mixer BERT (Fu et al., NeurIPS 2023)."""
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from m2bert.config import M2BertConfig
from m2bert.model import (
    M2BertForMaskedLM,
    M2BertForSequenceClassification,
    M2BertModel,
    param_groups,
)

__version__ = "0.1.0"

# After `import m2bert`, the Auto* factories load our directories (no remote code needed).
AutoConfig.register(M2BertConfig.model_type, M2BertConfig, exist_ok=True)
AutoModel.register(M2BertConfig, M2BertModel, exist_ok=True)
AutoModelForMaskedLM.register(M2BertConfig, M2BertForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(M2BertConfig, M2BertForSequenceClassification, exist_ok=True)

__all__ = [
    "M2BertConfig",
    "M2BertForMaskedLM",
    "M2BertForSequenceClassification",
    "M2BertModel",
    "param_groups",
]
