"""The kernels' self-check (run on the first GPU use) passes the real kernels and catches wrong ones.

Here the interpreter stands in for the GPU: "cpu" is added to the device types the self-check
guards, so ``kernels: auto`` would send CPU tensors to the (interpreted) kernels.
"""
import logging

import pytest
import torch

from m2bert import M2BertConfig, M2BertModel
from m2bert.model import kernel_selfcheck as selfcheck
from m2bert.model import kernel_switch

pytest.importorskip("triton")


@pytest.fixture
def guarded_cpu(monkeypatch):
    monkeypatch.setattr(kernel_switch, "KERNEL_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setattr(kernel_switch, "_verdicts", {})


def scaled(fn):
    return lambda *a, **k: fn(*a, **k) * 1.01


def broken(*a, **k):
    raise RuntimeError("out of resources: shared memory")


@pytest.mark.parametrize("kernel", kernel_switch.KERNELS)
def test_real_kernels_pass(kernel, monkeypatch):
    # fp32 and the tile plan only: the interpreter takes ~40 s for the passes (tests/kernels test them)
    monkeypatch.setattr(selfcheck, "SEQ_MIXER_LENGTHS", (40,))
    assert selfcheck.check(kernel, "cpu", dtypes=(torch.float32,)) is None


def test_wrong_and_failing_kernels_are_caught(monkeypatch):
    problem = selfcheck.check("monarch_glu", "cpu", dtypes=(torch.float32,), fused=scaled(kernel_switch.monarch_glu))
    assert problem and "output off by 1.0e-02" in problem
    monkeypatch.setattr(selfcheck, "seq_mixer_conv_triton", broken)  # the default entry
    assert selfcheck.check("seq_mixer_conv", torch.device("cpu")) == (
        "seq_mixer_conv: RuntimeError: out of resources: shared memory")


def model_outputs(kernels: str) -> torch.Tensor:
    torch.manual_seed(0)
    model = M2BertModel(M2BertConfig.from_preset("m2-bert-tiny", hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=1, max_length=64, kernels=kernels)).eval()
    ids = torch.randint(5, 1024, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(ids, torch.ones_like(ids)).last_hidden_state


def test_auto_warns_once_and_falls_back(guarded_cpu, monkeypatch, caplog):
    monkeypatch.setattr(kernel_switch, "seq_mixer_conv", scaled(kernel_switch.seq_mixer_conv))
    monkeypatch.setattr(selfcheck, "check", lambda kernel, device, **k: (
        # the GLU kernel passes (fp32 only, to keep the interpreter quick); the wrong one is caught
        orig_check(kernel, device, **{**k, "dtypes": (torch.float32,)})))
    calls = []
    glu = kernel_switch.monarch_glu
    monkeypatch.setattr(kernel_switch, "monarch_glu", lambda *a, **k: calls.append(1) or glu(*a, **k))
    with caplog.at_level(logging.WARNING, logger="m2bert.model.kernel_switch"):
        out = model_outputs("auto")
        model_outputs("auto")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "seq_mixer_conv (L=40): output off by" in warnings[0], warnings
    assert "runs in PyTorch for the rest of this run" in warnings[0]
    assert calls  # the GLU kernel passed its check and is used
    torch.testing.assert_close(out, model_outputs("torch"), rtol=1e-4, atol=1e-4)


def test_triton_raises(guarded_cpu, monkeypatch):
    monkeypatch.setattr(kernel_switch, "monarch_glu", broken)
    kernel_switch._verdicts[("seq_mixer_conv", "cpu")] = None  # passed (as above), to keep the interpreter quick
    monkeypatch.setattr(selfcheck, "check",
                        lambda kernel, device, **k: orig_check(kernel, device, **{**k, "dtypes": (torch.float32,)}))
    with pytest.raises(RuntimeError, match=r"kernels: triton, but the fused kernel failed its self-check on cpu "
                                           r"\(monarch_glu: RuntimeError: out of resources"):
        model_outputs("triton")


orig_check = selfcheck.check
