"""The Composer wrapper: the models compute their own loss, the wrapper's only child is the model (so
Composer's FSDP wraps every parameter exactly once), and checkpoints of the earlier wrapper, which also
held ``encoder.*`` / ``head.*`` aliases, still load strictly."""
from __future__ import annotations

from unittest import mock

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from m2bert import M2BertConfig, M2BertForMaskedLM, M2BertForSequenceClassification
from m2bert.model.bert_baseline import BertBaselineForMaskedLM
from m2bert.train.composer_models import ComposerClassifier, ComposerMLM

BERT = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            hidden_dropout_prob=0.0)


def mlm(family: str) -> ComposerMLM:
    torch.manual_seed(0)
    if family == "m2":
        return ComposerMLM(M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=128, hidden_dropout_prob=0.0)))
    return ComposerMLM(BertBaselineForMaskedLM(BertConfig(**BERT)))


def classifier(family: str, num_labels: int) -> ComposerClassifier:
    torch.manual_seed(0)
    if family == "m2":
        config = M2BertConfig.from_preset("m2-bert-tiny", vocab_size=128, num_labels=num_labels, hidden_dropout_prob=0.0)
        return ComposerClassifier(M2BertForSequenceClassification(config), num_labels)
    return ComposerClassifier(BertForSequenceClassification(BertConfig(**BERT, num_labels=num_labels)), num_labels)


def mlm_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 128, (2, 16), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = ids[:, ::3]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def cls_batch(num_labels: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 128, (4, 12), generator=g)
    labels = torch.tensor([0.5, 4.0, 2.5, 1.0]) if num_labels == 1 else torch.tensor([0, 2, 1, 2])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "idx": torch.arange(4)}


@pytest.mark.parametrize("family", ["m2", "bert"])
def test_mlm_loss_and_metrics_come_from_the_model(family):
    wrapped = mlm(family).eval()
    batch = mlm_batch()
    out = wrapped(batch)
    ref = wrapped.model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    torch.testing.assert_close(wrapped.loss(out, batch), ref.loss)
    sel = batch["labels"] != -100
    assert out["logits"].shape == (int(sel.sum()), 128)  # decoded only where masked
    assert out["masked_labels"].tolist() == batch["labels"][sel].tolist()
    metrics = wrapped.get_metrics(is_train=False)
    for metric in metrics.values():
        wrapped.update_metric(batch, wrapped.eval_forward(batch, out), metric)
    torch.testing.assert_close(metrics["LanguageCrossEntropy"].compute(), ref.loss)
    assert 0.0 <= metrics["MaskedAccuracy"].compute().item() <= 1.0


@pytest.mark.parametrize("num_labels", [3, 1], ids=["classification", "regression"])
@pytest.mark.parametrize("family", ["m2", "bert"])
def test_classifier_loss_is_transformers_convention_in_float32(family, num_labels):
    """M2's classifier and transformers' BERT compute the same loss from labels: cross-entropy over class ids,
    MSE against scores when num_labels == 1, float32 even under bf16 autocast; the wrapper only returns it."""
    wrapped = classifier(family, num_labels).eval()
    batch = cls_batch(num_labels)
    out = wrapped(batch)  # idx is not a model input: the wrapper passes the model's inputs only
    logits, labels = out["logits"], batch["labels"]
    expect = (torch.nn.MSELoss()(logits.squeeze(), labels.squeeze()) if num_labels == 1
              else torch.nn.CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1)))
    torch.testing.assert_close(wrapped.loss(out, batch), expect)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = wrapped(batch)
    assert low["logits"].dtype == torch.bfloat16 and low["loss"].dtype == torch.float32
    preds = wrapped.predictions(out)
    assert preds.shape == (4,) and preds.dtype == (torch.float32 if num_labels == 1 else torch.long)
    metric = next(iter(wrapped.get_metrics(is_train=True).values()))
    wrapped.update_metric(batch, out, metric)
    assert torch.isfinite(metric.compute())


def _composer_fsdp_wraps(wrapped: torch.nn.Module) -> list[tuple[torch.nn.Module, object]]:
    """The modules Composer's FSDP (``parallel=fsdp``) wraps, through its real ``prepare_fsdp_module``; only
    the FSDP constructor is recorded instead of run (it needs CUDA: Composer passes
    ``device_id=torch.cuda.current_device()``), with the auto-wrap policy it would get."""
    from composer.distributed import dist_strategy
    from composer.utils.parallelism import FSDPConfig

    calls: list[tuple[torch.nn.Module, object]] = []

    def record(module: torch.nn.Module, **kwargs: object) -> torch.nn.Module:
        calls.append((module, kwargs["auto_wrap_policy"]))
        return module

    optimizer = torch.optim.AdamW(wrapped.parameters())
    config = FSDPConfig(sharding_strategy="FULL_SHARD", mixed_precision="DEFAULT", state_dict_type="full")
    with mock.patch.object(dist_strategy, "FullyShardedDataParallel", record), \
            mock.patch.object(torch.cuda, "current_device", lambda: 0):
        dist_strategy.prepare_fsdp_module(wrapped, optimizer, config, "fp32", "cpu")
    return calls


@pytest.mark.filterwarnings("ignore:FSDP does not have attribute _exec_order_data")  # the recorded constructor
@pytest.mark.parametrize("make", [lambda: mlm("m2"), lambda: mlm("bert"), lambda: classifier("m2", 2),
                                  lambda: classifier("bert", 1)], ids=["m2-mlm", "bert-mlm", "m2-cls", "bert-cls"])
def test_fsdp_wraps_every_parameter_exactly_once(make):
    wrapped = make()
    assert [name for name, _ in wrapped.named_children()] == ["model"]
    calls = _composer_fsdp_wraps(wrapped)
    assert [module for module, _ in calls] == [wrapped.model]
    owned = [id(p) for module, _ in calls for p in module.parameters()]
    assert sorted(owned) == sorted(id(p) for p in wrapped.parameters()) and len(owned) == len(set(owned))
    policy = calls[0][1]
    assert not any(policy._lambda_fn(m) for m in wrapped.model.modules())  # no nested FSDP units either
    assert all(k.startswith("model.") for k in wrapped.state_dict())


@pytest.mark.parametrize("family", ["m2", "bert"])
def test_checkpoint_with_legacy_aliases_loads_strictly(family):
    """The earlier ComposerMLM also registered encoder (= model.bert) and head (= the MLM head), so its
    checkpoints hold those weights twice; they load, strictly, as Composer loads them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    source, target = mlm(family), mlm(family)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    head = "model.mlm_head." if family == "m2" else "model.cls."
    legacy = dict(source.state_dict())
    for key, value in source.state_dict().items():
        for prefix, alias in (("model.bert.", "encoder."), (head, "head.")):
            if key.startswith(prefix):
                legacy[alias + key[len(prefix):]] = value.clone()
    assert any(k.startswith("encoder.") for k in legacy) and any(k.startswith("head.") for k in legacy)
    set_model_state_dict(target, legacy, options=StateDictOptions(full_state_dict=True, strict=True))
    for name, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(RuntimeError, match="model.bogus"):  # strictness is kept for every other key
        target.load_state_dict({**source.state_dict(), "model.bogus": torch.zeros(1)}, strict=True)
