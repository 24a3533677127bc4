"""The compiled Triton kernels on a CUDA GPU vs the PyTorch reference (skipped without a GPU).

Same shapes and tolerances as the interpreted suite (tests/kernels/), plus the model's shapes
(H = 768) in bf16, and the model switch end to end. Run by bench/gpu_check.sh.
"""
import os

import pytest
import torch

from m2bert import M2BertConfig, M2BertForMaskedLM
from tests.kernels import conftest as tol

pytest.importorskip("triton")
pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="compiled kernels only"),
]


def to_cuda(args):
    return [None if t is None else t.detach().cuda().requires_grad_(t.requires_grad) for t in args]


# Tiles (auto at L ≤ 128, forced at 600) and passes (auto beyond 128, up to the longest length).
@pytest.mark.parametrize("batch,seqlen,h,algorithm", [
    (2, 100, 24, "auto"), (2, 128, 768, "auto"), (1, 1024, 64, "auto"), (2, 600, 40, "tile"),
    (2, 4000, 64, "auto"), (1, 8192, 768, "auto"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_seq_mixer_conv(batch, seqlen, h, algorithm, dtype):
    from m2bert.kernels.seq_mixer_conv import seq_mixer_conv_triton
    from m2bert.model.seq_mixer_conv import seq_mixer_conv_reference as reference
    from tests.kernels.test_seq_mixer_conv import NAMES, check, make

    args = to_cuda(make(batch, seqlen, h))
    if dtype == torch.float32:
        check(args, algorithm=algorithm)
        return
    # bf16 activations vs the fp32 reference on the same rounded values
    low = [t.detach().to(dtype).requires_grad_(t.requires_grad) if i < 3 and t is not None else t
           for i, t in enumerate(args)]
    exact = [t.detach().float().requires_grad_(t.requires_grad) if i < 3 and t is not None else t
             for i, t in enumerate(low)]
    y, y_ref = seq_mixer_conv_triton(*low, algorithm=algorithm), reference(*exact)
    assert tol.rel_err(y, y_ref) <= tol.BF16_TOL
    dy = torch.randn_like(y_ref)
    idx = [i for i in range(3) if low[i] is not None and low[i].requires_grad]
    g = torch.autograd.grad(y, [low[i] for i in idx], dy.to(dtype))
    g_ref = torch.autograd.grad(y_ref, [exact[i] for i in idx], dy)
    for i, a, b in zip(idx, g, g_ref):
        assert tol.rel_err(a, b) <= tol.BF16_TOL, NAMES[i]


@pytest.mark.parametrize("shape", [(2, 37, 24, 96, 4), (4, 128, 768, 3072, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_monarch_glu(shape, dtype):
    from m2bert.kernels.blockdiag_glu import monarch_glu_triton
    from m2bert.model.monarch import monarch_glu as reference
    from tests.kernels.test_blockdiag_glu import make

    inputs = to_cuda(make(*shape))
    low = [t.detach().to(dtype).requires_grad_() for t in inputs]
    exact = [t.detach().float().requires_grad_() for t in low]
    y, y_ref = monarch_glu_triton(*low), reference(*exact)
    bound = tol.FP32_TOL if dtype == torch.float32 else tol.BF16_TOL
    assert tol.rel_err(y, y_ref) <= bound
    dy = torch.randn_like(y_ref)
    g = torch.autograd.grad(y, low, dy.to(dtype))
    g_ref = torch.autograd.grad(y_ref, exact, dy)
    for a, b in zip(g, g_ref):
        assert tol.rel_err(a, b) <= bound


def test_model_switch_on_gpu():
    cfg = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, max_length=256, hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    ref = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", kernels="torch", **cfg)).cuda()
    ours = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", kernels="auto", **cfg)).cuda()
    ours.load_state_dict(ref.state_dict())
    ids = torch.randint(5, 1024, (2, 200), device="cuda")
    att = torch.ones_like(ids)
    att[0, 150:] = 0
    with torch.no_grad():
        a = ref.bert(ids, att).last_hidden_state
        b = ours.bert(ids, att).last_hidden_state
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
