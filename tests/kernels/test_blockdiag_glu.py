"""Fused block-diagonal GLU MLP (kernels/blockdiag_glu.py) vs the model's monarch_glu, interpreted on CPU."""
import pytest
import torch
import torch.nn.functional as F

from m2bert.kernels.blockdiag_glu import _MonarchGLU, monarch_glu_triton
from m2bert.model.monarch import blockdiag_multiply
from m2bert.model.monarch import monarch_glu as reference
from tests.kernels.conftest import BF16_TOL, FP32_TOL, rel_err

pytest.importorskip("triton")


def make(batch, seqlen, h, i, nblocks, dtype=torch.float32):
    x = torch.randn(batch, seqlen, h)
    w_in = torch.randn(nblocks, 2 * i // nblocks, h // nblocks) / (h // nblocks) ** 0.5
    w_out = torch.randn(nblocks, h // nblocks, i // nblocks) / (i // nblocks) ** 0.5
    b_out = torch.randn(h)
    return [t.to(dtype).requires_grad_() for t in (x, w_in, w_out, b_out)]


def grads(y, inputs, dy):
    return torch.autograd.grad(y, inputs, dy)


# (batch, seqlen, H, I, nblocks): H/nblocks not a multiple of the 16/32/64 tiles, B = 1 and > 1,
# token counts that are not multiples of the row tile, and the (H, 4H, 4 blocks) model shape.
SHAPES = [(1, 16, 8, 32, 4), (2, 37, 24, 96, 4), (2, 70, 16, 32, 2), (1, 5, 96, 384, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_fp32_forward_and_gradients(shape):
    inputs = make(*shape)
    y = monarch_glu_triton(*inputs)
    y_ref = reference(*inputs)
    assert rel_err(y, y_ref) <= FP32_TOL
    dy = torch.randn_like(y)
    for name, g, g_ref in zip(("x", "w_in", "w_out", "b_out"), grads(y, inputs, dy), grads(y_ref, inputs, dy)):
        assert rel_err(g, g_ref) <= FP32_TOL, name


def test_no_bias():
    x, w_in, w_out, _ = make(2, 9, 16, 64, 4)
    y = monarch_glu_triton(x, w_in, w_out, None)
    assert rel_err(y, reference(x, w_in, w_out, None)) <= FP32_TOL
    gx = torch.autograd.grad(y.sum(), x)[0]
    assert rel_err(gx, torch.autograd.grad(reference(x, w_in, w_out, None).sum(), x)[0]) <= FP32_TOL


def test_dropout_mask_in_the_epilogues():
    """With a given dropout mask, the kernels equal wo((GELU(gate)·value)·mask) + b, gradients too."""
    x, w_in, w_out, b = make(2, 11, 16, 64, 4)
    keep = 0.75
    mask = torch.empty(22, 64).bernoulli_(keep) / keep
    y = _MonarchGLU.apply(x, w_in, w_out, b, mask)
    gv = blockdiag_multiply(x, w_in)
    gate, value = gv.split(64, dim=-1)
    y_ref = blockdiag_multiply((F.gelu(gate) * value) * mask.reshape(2, 11, 64), w_out) + b
    assert rel_err(y, y_ref) <= FP32_TOL
    dy = torch.randn_like(y)
    for g, g_ref in zip(grads(y, [x, w_in, w_out, b], dy), grads(y_ref, [x, w_in, w_out, b], dy)):
        assert rel_err(g, g_ref) <= FP32_TOL
    # The public entry point draws the mask itself: in eval mode (or p = 0) there is none.
    torch.testing.assert_close(monarch_glu_triton(x, w_in, w_out, b, 0.1, training=False),
                               reference(x, w_in, w_out, b), rtol=1e-4, atol=1e-4)


def test_bf16():
    inputs = make(2, 33, 24, 96, 4)
    exact = [t.detach().to(torch.bfloat16).double().requires_grad_() for t in inputs]
    low = [t.detach().to(torch.bfloat16).requires_grad_() for t in inputs]
    y = monarch_glu_triton(*low)
    assert y.dtype == torch.bfloat16
    y_exact = reference(*exact)
    assert rel_err(y, y_exact) <= BF16_TOL
    dy = torch.randn_like(y_exact)
    for g, g_exact in zip(grads(y, low, dy.to(torch.bfloat16)), grads(y_exact, exact, dy)):
        assert g.dtype == torch.bfloat16
        assert rel_err(g, g_exact) <= BF16_TOL
