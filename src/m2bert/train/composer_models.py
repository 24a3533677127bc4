"""The Composer wrapper: the models compute their own loss; the wrapper adds metrics and the FLOPs estimate.

Its only child module is the model, because Composer's FSDP wraps every direct child of a ComposerModel
(``composer.distributed.dist_strategy.prepare_fsdp_module``): a second path to the same parameters (an
``encoder`` alias of ``model.bert``, say) would wrap them twice. Checkpoints therefore hold ``model.*``
keys only; the ``encoder.*`` / ``head.*`` aliases that earlier versions also wrote are dropped on load.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from composer.metrics.nlp import LanguageCrossEntropy, MaskedAccuracy
from composer.models import ComposerModel
from torchmetrics import MeanSquaredError, Metric
from torchmetrics.classification import MulticlassAccuracy
from transformers.utils import ModelOutput

# The batch keys a model's forward takes (GLUE batches also carry ``idx``).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")
# Aliases of submodules of ``model`` that checkpoints of earlier versions hold beside ``model.*``.
LEGACY_ALIASES = ("encoder.", "head.")


class ComposerTaskModel(ComposerModel):
    """A Hugging Face model (M2 or BERT) as a ComposerModel: ``forward`` is the model's, with ``labels``, so
    the model returns its loss; subclasses only name their metrics and what the metrics compare."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train_metrics = self.new_metrics()
        self.eval_metrics = self.new_metrics()
        n_params = sum(p.numel() for p in model.parameters())
        # Speed monitor's MFU: 6·N FLOPs per token (fwd+bwd), the usual dense estimate.
        self.flops_per_batch = lambda batch: 6 * n_params * batch["input_ids"].numel()
        self._register_load_state_dict_pre_hook(_drop_legacy_aliases)

    def new_metrics(self) -> dict[str, Metric]:
        raise NotImplementedError

    def metric_inputs(self, outputs: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, targets) for the torchmetrics of ``new_metrics``."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return self.model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, return_dict=True)

    def loss(self, outputs: ModelOutput, batch: Any) -> torch.Tensor:
        return outputs["loss"]

    def eval_forward(self, batch: Any, outputs: Any | None = None) -> ModelOutput:
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: Any, outputs: ModelOutput, metric: Metric) -> None:
        metric.update(*self.metric_inputs(outputs, batch))


class ComposerMLM(ComposerTaskModel):
    """Masked language modelling (M2BertForMaskedLM or BertBaselineForMaskedLM): the model decodes only the
    masked positions and returns their logits and targets, which the metrics compare."""

    def new_metrics(self) -> dict[str, Metric]:
        return {"LanguageCrossEntropy": LanguageCrossEntropy(), "MaskedAccuracy": MaskedAccuracy()}

    def metric_inputs(self, outputs: ModelOutput, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs["logits"].float(), outputs["masked_labels"]


class ComposerClassifier(ComposerTaskModel):
    """Sequence classification or regression (``num_labels == 1``) for GLUE: M2BertForSequenceClassification
    or transformers' BertForSequenceClassification, whose losses follow the same convention. Training
    metrics are cheap running ones; the GLUE metrics are computed over the full dev sets from
    ``predictions`` by the fine-tuning driver, exactly as GLUE defines them."""

    def __init__(self, model: nn.Module, num_labels: int) -> None:
        self.num_labels = num_labels
        self.is_regression = num_labels == 1
        super().__init__(model)

    def new_metrics(self) -> dict[str, Metric]:
        if self.is_regression:
            return {"MeanSquaredError": MeanSquaredError()}
        return {"MulticlassAccuracy": MulticlassAccuracy(num_classes=self.num_labels, average="micro")}

    def predictions(self, outputs: ModelOutput | torch.Tensor) -> torch.Tensor:
        """Class ids, or the regression score, from the model's output (or its logits)."""
        logits = outputs["logits"] if isinstance(outputs, ModelOutput) else outputs
        return logits.squeeze(-1).float() if self.is_regression else logits.argmax(dim=-1)

    def metric_inputs(self, outputs: ModelOutput, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"]
        return self.predictions(outputs), labels.float() if self.is_regression else labels.long()


def _drop_legacy_aliases(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Earlier wrappers also registered ``encoder`` (= ``model.bert``) and ``head`` (= the task head) as
    children, so their checkpoints hold every such weight twice; the ``model.*`` copy is the one kept."""
    for key in [k for k in state_dict if k.startswith(tuple(prefix + a for a in LEGACY_ALIASES))]:
        del state_dict[key]
