"""Fused sequence-mixer convolution (kernels/seq_mixer_conv.py) vs the model's composition, interpreted on CPU."""
import pytest
import torch

from m2bert.kernels.seq_mixer_conv import MAX_SEQLEN, plan, seq_mixer_conv_triton
from m2bert.model import kernel_switch
from m2bert.model.seq_mixer_conv import seq_mixer_conv_reference as reference
from tests.kernels.conftest import BF16_TOL, FP32_TOL, rel_err

pytest.importorskip("triton")

NAMES = ("proj", "u", "mask", "sc_weight", "sc_bias", "k_fwd", "k_rev", "bias", "k2_fwd", "k2_rev", "bias2")


def make(batch, seqlen, h, masked=True, residual=True, bidirectional=True, dtype=torch.float32):
    proj = torch.randn(batch, seqlen, 3 * h)
    u = torch.randn(batch, seqlen, h)
    mask = None
    if masked:  # padded rows at the end of every sequence but the last one (which is full)
        lengths = [max(1, seqlen - (seqlen // 3) * (b + 1)) for b in range(batch - 1)] + [seqlen]
        mask = (torch.arange(seqlen)[None, :] < torch.tensor(lengths)[:, None]).to(dtype)[..., None]
    sc_w, sc_b = torch.randn(3 * h, 1, 3) / 3**0.5, torch.randn(3 * h)
    decay = torch.exp(-torch.arange(seqlen)[:, None] / (seqlen / 4))
    k_fwd = torch.randn(seqlen, h) * decay / seqlen**0.5
    k_rev = torch.randn(seqlen, h) * decay / seqlen**0.5 if bidirectional else None
    bias = torch.randn(h)
    k2 = (torch.randn(seqlen, h) * decay / seqlen**0.5, torch.randn(seqlen, h) * decay / seqlen**0.5, torch.randn(h))
    k2_fwd, k2_rev, bias2 = k2 if residual else (None, None, None)
    if residual and not bidirectional:
        k2_rev = None
    args = [proj, u, mask, sc_w, sc_b, k_fwd, k_rev, bias, k2_fwd, k2_rev, bias2]
    out = []
    for name, t in zip(NAMES, args):
        if t is not None:
            t = t.to(dtype) if name in ("proj", "u") else t
            t = t.requires_grad_() if name != "mask" else t
        out.append(t)
    return out


def check(args, tol=FP32_TOL, algorithm="auto"):
    y = seq_mixer_conv_triton(*args, algorithm=algorithm)
    y_ref = reference(*args)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert rel_err(y, y_ref) <= tol, "output"
    dy = torch.randn_like(y)
    idx = [i for i, t in enumerate(args) if t is not None and t.requires_grad]
    wrt = [args[i] for i in idx]
    g = torch.autograd.grad(y, wrt, dy, allow_unused=True)
    g_ref = torch.autograd.grad(y_ref, wrt, dy, allow_unused=True)
    for i, a, b in zip(idx, g, g_ref):
        if b is None:  # u without the residual convolution
            assert a is None or a.abs().max() == 0, NAMES[i]
            continue
        assert rel_err(a, b) <= tol, NAMES[i]


# (batch, L, H): L from 16 to 1024 incl. non powers of two, H not a multiple of the channel block;
# the default plan (tiles up to 128, passes beyond) and, where it applies, the other one.
@pytest.mark.parametrize("batch,seqlen,h,algorithm", [
    (1, 16, 8, "auto"), (2, 100, 24, "auto"), (2, 128, 16, "auto"), (2, 200, 8, "auto"), (2, 200, 8, "tile"),
    (3, 300, 8, "auto"), (3, 300, 8, "tile"), (1, 1024, 8, "auto"),
])
def test_fp32_padded(batch, seqlen, h, algorithm):
    check(make(batch, seqlen, h), algorithm=algorithm)


@pytest.mark.parametrize("residual,bidirectional", [(False, True), (True, False), (False, False)])
def test_fp32_unmasked_variants(residual, bidirectional):
    check(make(2, 50, 12, masked=False, residual=residual, bidirectional=bidirectional))


@pytest.mark.parametrize("algorithm", ["tile", "passes"])
def test_bf16(algorithm):
    args = make(2, 300, 8)
    # Activations (proj, u, mask) in bf16, parameters in fp32 holding the same bf16-rounded values;
    # the exact reference is fp64 math on those values.
    base = [t.detach().to(torch.bfloat16) if t is not None else None for t in args]
    exact = [t.double().requires_grad_(a.requires_grad) if t is not None else None for t, a in zip(base, args)]
    low = [(t if i < 3 else t.float()).requires_grad_(a.requires_grad) if t is not None else None
           for i, (t, a) in enumerate(zip(base, args))]
    y = seq_mixer_conv_triton(*low, algorithm=algorithm)
    assert y.dtype == torch.bfloat16
    y_exact = reference(*exact)
    assert rel_err(y, y_exact) <= BF16_TOL
    dy = torch.randn_like(y_exact)
    idx = [i for i, t in enumerate(low) if t is not None and t.requires_grad]
    g = torch.autograd.grad(y, [low[i] for i in idx], dy.to(torch.bfloat16))
    g_exact = torch.autograd.grad(y_exact, [exact[i] for i in idx], dy)
    for i, a, b in zip(idx, g, g_exact):
        assert rel_err(a, b) <= BF16_TOL, NAMES[i]


# The long-input algorithm (three passes through a scratch), forced at lengths the tiles also take,
# with the same variety: padding, B = 1 and > 1, H not a multiple of the channel block, no residual.
@pytest.mark.parametrize("batch,seqlen,h,kw", [
    (3, 300, 8, {}),
    (1, 513, 12, {}),
    (2, 257, 24, dict(masked=False, residual=False)),
    (2, 400, 8, dict(residual=True, bidirectional=False)),
])
def test_passes(batch, seqlen, h, kw):
    check(make(batch, seqlen, h, **kw), algorithm="passes")


def test_auto_takes_passes_for_long_inputs():
    assert plan(1100, 8).algorithm == "passes"
    check(make(1, 1100, 8))


def test_plan():
    p = plan(128, 768)
    assert p.algorithm == "tile" and (p.n1, p.n2, p.bh, p.warps) == (16, 16, 8, 8)
    assert plan(100, 8).n == 256  # padded to N = 256, the smallest tl.dot-friendly size
    p = plan(129, 768)
    assert p.algorithm == "passes" and (p.n1, p.n2) == (32, 16)
    p = plan(1024, 768, "tile")
    assert p.n == 2048 and min(p.n1, p.n2) >= 16 and p.n * p.bh <= 2048
    p = plan(8192, 768)
    assert p.algorithm == "passes" and (p.n1, p.n2) == (128, 128) and p.bn2 * p.bh == 64 and p.bk1 * p.bh == 32
    with pytest.raises(ValueError, match="needs a convolution size"):
        plan(100, 8, "passes")
    with pytest.raises(ValueError, match="use kernels: torch"):
        plan(MAX_SEQLEN + 1, 8)


def test_model_falls_back_beyond_the_longest_length(caplog):
    assert kernel_switch.seq_mixer_fits(MAX_SEQLEN)
    with caplog.at_level("WARNING"):
        assert not kernel_switch.seq_mixer_fits(MAX_SEQLEN + 1)
    assert "runs in PyTorch" in caplog.text
