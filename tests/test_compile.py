"""torch.compile: the model is graph-break free, compiled training equals eager, the switch reaches Composer.

Inductor's C++ code generation for CPU costs minutes here (375 s for a 1-layer tiny model on the
shared 2-core machine, cold cache), so the suite compiles with the ``aot_eager`` backend: dynamo's
graph capture and AOTAutograd's traced, decomposed forward and backward — the graphs inductor
receives — without the C++ compiler. ``M2BERT_TEST_INDUCTOR=1`` runs the same check with inductor.
"""
from __future__ import annotations

import logging
import os

import pytest
import torch
import torch._dynamo

from m2bert import M2BertConfig, M2BertForMaskedLM, M2BertForSequenceClassification
from m2bert.train import torch_compile
from m2bert.options import ConfigError
from m2bert.train.composer_models import ComposerMLM

BACKEND = "inductor" if os.environ.get("M2BERT_TEST_INDUCTOR") == "1" else "aot_eager"


def tiny_batch(seqlen: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (2, seqlen), generator=g)
    attention = torch.ones_like(ids)
    attention[0, seqlen - 4:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def assert_one_graph(fn, *args, **kwargs) -> None:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args, **kwargs)
    # A data-dependent guard can end a graph early without counting as a break: check the reasons too.
    reasons = [str(b.reason).splitlines()[0] for b in explained.break_reasons]
    assert (explained.graph_count, explained.graph_break_count, reasons) == (1, 0, [])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_graph_break_free(mode):
    torch_compile.prepare()
    b = tiny_batch()
    mlm = getattr(M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny")), mode)()
    cls = getattr(M2BertForSequenceClassification(M2BertConfig.from_preset("m2-bert-tiny", num_labels=3)), mode)()
    with torch.set_grad_enabled(mode == "train"):  # eval: the inference path (cached filter spectra in eager)
        assert_one_graph(mlm, b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        assert_one_graph(cls, b["input_ids"], attention_mask=b["attention_mask"], labels=torch.tensor([0, 2]))


def test_compiled_training_equals_eager():
    """Three AdamW steps of the MLM objective (the Composer wrapper, as pretraining compiles it), fp32."""
    cfg = M2BertConfig.from_preset("m2-bert-tiny", num_hidden_layers=1, hidden_dropout_prob=0.0)
    batch = tiny_batch()
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = ComposerMLM(M2BertForMaskedLM(cfg)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        if compiled:
            torch._dynamo.reset()
            forward = torch_compile.compile_module(model, backend=BACKEND, fullgraph=True)
        else:
            forward = model
        losses[compiled] = []
        for _ in range(3):
            loss = model.loss(forward(batch), batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses[compiled].append(loss.item())
    assert losses[False][-1] < losses[False][0]
    torch.testing.assert_close(losses[True], losses[False], rtol=0, atol=1e-4)


def test_switch_values():
    assert [torch_compile.normalize(v) for v in (True, "False", "auto", " TRUE ")] == ["true", "false", "auto", "true"]
    with pytest.raises(ConfigError, match=r"impl.compile='fast'; choose one of auto, true, false"):
        torch_compile.normalize("fast")
    assert torch_compile.wanted("auto", "gpu") and torch_compile.wanted("auto", torch.device("cuda", 0))
    assert not torch_compile.wanted("auto", "cpu")
    assert torch_compile.wanted("true", "cpu") and not torch_compile.wanted("false", "gpu")
    assert torch_compile.composer_compile_config("auto", "cpu") is None


def test_pretraining_compiles_through_composer(sample_mds, tmp_path, monkeypatch, caplog):
    """impl.compile=true reaches Composer's compile_config: train and eval run compiled, time is logged."""
    from tests.conftest import compose_pretrain, tiny_pretrain_overrides

    from m2bert.pretrain import run

    calls = []
    real_compile = torch.compile

    def compile_fast(model, **kwargs):
        calls.append(kwargs)
        return real_compile(model, backend=BACKEND)

    monkeypatch.setattr(torch, "compile", compile_fast)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    cfg = compose_pretrain(tiny_pretrain_overrides(sample_mds, tmp_path, "c") + [
        "impl.compile=true", "max_duration=2ba", "eval_interval=2ba", "eval_subset_num_batches=1",
        "+model.overrides.num_hidden_layers=1", "export_hf=false"])
    with caplog.at_level(logging.INFO, logger="m2bert.train.torch_compile"):
        summary = run(cfg)
    assert calls == [{}]
    assert summary["batches"] == 2 and summary["eval"]
    assert "torch.compile: first step took" in caplog.text
    assert "torch.compile: first eval batch took" in caplog.text
    assert str(tmp_path / "inductor") in caplog.text  # a user's cache folder is kept
