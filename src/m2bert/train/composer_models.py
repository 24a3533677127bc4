"""Composer wrappers: MLM pretraining (M2 or the BERT baseline) and sequence classification."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from composer.metrics.nlp import LanguageCrossEntropy, MaskedAccuracy
from composer.models import ComposerModel
from torchmetrics import Metric

from m2bert.model.modeling import masked_lm_loss


def encoder_and_mlm_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The encoder and the MLM head of an M2BertForMaskedLM or a transformers BertForMaskedLM."""
    head = getattr(model, "mlm_head", None) or getattr(model, "cls", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no MLM head (mlm_head or cls)")
    return model.bert, head


class ComposerMLM(ComposerModel):
    """Masked language modelling; the decoder runs only on the masked positions.

    Most of the MLM head's cost (a vocab-sized matmul per token) disappears: with 30%
    masking, 70% of the decoder's work is skipped, as in the original.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.encoder, self.head = encoder_and_mlm_head(model)
        self.train_metrics = {"LanguageCrossEntropy": LanguageCrossEntropy(), "MaskedAccuracy": MaskedAccuracy()}
        self.eval_metrics = {"LanguageCrossEntropy": LanguageCrossEntropy(), "MaskedAccuracy": MaskedAccuracy()}
        n_params = sum(p.numel() for p in model.parameters())
        # Speed monitor's MFU: 6·N FLOPs per token (fwd+bwd), the usual dense estimate.
        self.flops_per_batch = lambda batch: 6 * n_params * batch["input_ids"].numel()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.encoder(
            batch["input_ids"], attention_mask=batch.get("attention_mask"), token_type_ids=batch.get("token_type_ids")
        )[0]
        labels = batch["labels"].reshape(-1)
        positions = (labels != -100).nonzero().squeeze(-1)
        logits = self.head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions))
        return {"logits": logits, "targets": labels.index_select(0, positions)}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        return masked_lm_loss(outputs["logits"], outputs["targets"])  # 0.0, not NaN, without masked tokens

    def eval_forward(self, batch: Any, outputs: Any | None = None) -> dict[str, torch.Tensor]:
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: Any, outputs: dict[str, torch.Tensor], metric: Metric) -> None:
        metric.update(outputs["logits"].float(), outputs["targets"])


class ComposerClassifier(ComposerModel):
    """Sequence classification (cross-entropy) or regression (MSE, ``num_labels == 1``) for GLUE.

    Wraps an M2BertForSequenceClassification (or any HF model returning ``.logits``). Training
    metrics are cheap running ones; the GLUE metrics are computed over the full dev sets from
    ``predictions`` by the fine-tuning driver, exactly as GLUE defines them.
    """

    def __init__(self, model: nn.Module, num_labels: int) -> None:
        super().__init__()
        from torchmetrics import MeanSquaredError
        from torchmetrics.classification import MulticlassAccuracy

        self.model = model
        self.num_labels = num_labels
        self.is_regression = num_labels == 1

        def fresh() -> dict[str, Metric]:
            if self.is_regression:
                return {"MeanSquaredError": MeanSquaredError()}
            return {"MulticlassAccuracy": MulticlassAccuracy(num_classes=num_labels, average="micro")}

        self.train_metrics = fresh()
        self.eval_metrics = fresh()
        n_params = sum(p.numel() for p in model.parameters())
        self.flops_per_batch = lambda batch: 6 * n_params * batch["input_ids"].numel()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(
            batch["input_ids"], attention_mask=batch.get("attention_mask"), token_type_ids=batch.get("token_type_ids")
        ).logits

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        if self.is_regression:
            return F.mse_loss(outputs.squeeze(-1).float(), batch["labels"].float())
        return F.cross_entropy(outputs.float(), batch["labels"].long())

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """Class ids, or the regression score."""
        return logits.squeeze(-1).float() if self.is_regression else logits.argmax(dim=-1)

    def eval_forward(self, batch: Any, outputs: Any | None = None) -> torch.Tensor:
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: Any, outputs: torch.Tensor, metric: Metric) -> None:
        labels = batch["labels"]
        metric.update(self.predictions(outputs), labels.float() if self.is_regression else labels.long())
