"""Reduced precision: a saved model reloaded with ``dtype=`` (bf16, fp16) runs and agrees with fp32.

transformers builds a model loaded with ``dtype=`` under that default dtype, so every tensor the
model computes at construction (the implicit filters' positional features, the decay rates, the
Monarch DFT factors) must not follow the default dtype blindly: fp32 (never complex half) at
construction, cast where used.
"""
from __future__ import annotations

import pytest
import torch

from m2bert import M2BertConfig, M2BertForMaskedLM


def _saved_tiny(tmp_path, impl: str):
    config = M2BertConfig.from_preset("m2-bert-tiny", long_conv_impl=impl, kernels="torch",
                                      hyena_training_additions=True)
    model = M2BertForMaskedLM(config).eval()
    model.save_pretrained(tmp_path)
    return model, config


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize(("impl", "kwarg"), [("fft", "dtype"), ("monarch", "dtype"), ("direct", "dtype"),
                                           ("fft", "torch_dtype")])
def test_from_pretrained_bf16_matches_fp32(tmp_path, impl, kwarg):
    from transformers import AutoModelForMaskedLM

    model, config = _saved_tiny(tmp_path, impl)
    ids = torch.randint(0, config.vocab_size, (2, 48))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        low = AutoModelForMaskedLM.from_pretrained(tmp_path, **{kwarg: torch.bfloat16}).eval()
        assert low.bert.embeddings.word_embeddings.weight.dtype == torch.bfloat16
        out = low(ids, attention_mask=mask).logits
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    assert _rel_err(out, ref) < 0.05


def test_from_pretrained_fp16_runs_on_cpu(tmp_path):
    """fp16 on CPU: torch 2.7 has the half kernels the model needs, so it runs (no refusal needed)."""
    from transformers import AutoModelForMaskedLM

    model, config = _saved_tiny(tmp_path, "fft")
    ids = torch.randint(0, config.vocab_size, (2, 48))
    with torch.no_grad():
        ref = model(ids).logits
        out = AutoModelForMaskedLM.from_pretrained(tmp_path, dtype=torch.float16).eval()(ids).logits
    assert out.dtype == torch.float16
    assert _rel_err(out, ref) < 0.05


def test_construction_under_half_default_dtype_makes_no_complex_half():
    """Building the model with the default dtype set to fp16 (as transformers does) works, and the
    implicit filters' features stay fp32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        model = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", kernels="torch"))
    finally:
        torch.set_default_dtype(previous)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        assert not tensor.is_complex(), name
        if name.endswith((".z", ".t", ".deltas")):
            assert tensor.dtype == torch.float32, name
