"""The long-convolution implementations (fft, monarch, direct, and auto's pick) equal the direct sum of the definition."""
import math

import pytest
import torch
import torch._dynamo

from m2bert.model import long_conv as long_conv_module
from m2bert.model.long_conv import conv_spectrum, fft_size, long_conv, resolve_impl


def direct_definition(u, k_fwd, k_rev, bias):
    """y[t] = Σ_s k_fwd[s]·u[t−s] + Σ_{m≥1} k_rev[m−1]·u[t+m] + bias·u[t] (notes/monarch-fft.md)."""
    b, L, h = u.shape
    y = u * bias
    for t in range(L):
        for s in range(t + 1):
            y[:, t] += k_fwd[s] * u[:, t - s]
        if k_rev is not None:
            for m in range(1, L - t):
                y[:, t] += k_rev[m - 1] * u[:, t + m]
    return y


@pytest.mark.parametrize("impl", ["fft", "monarch", "direct", "auto"])
@pytest.mark.parametrize("seqlen", [1, 11, 12, 37, 50, 64])  # 11, 37: the FFT pads 2L to 24, 80
@pytest.mark.parametrize("bidirectional", [True, False])
def test_matches_definition(impl, seqlen, bidirectional):
    u = torch.randn(2, seqlen, 3, dtype=torch.float64)
    k_fwd, k_rev = torch.randn(seqlen, 3, dtype=torch.float64), torch.randn(seqlen, 3, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    k_rev = k_rev if bidirectional else None
    ref = direct_definition(u, k_fwd, k_rev, bias)
    ours = long_conv(u.float(), k_fwd.float(), None if k_rev is None else k_rev.float(), bias.float(), impl)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4)


def test_gradients_agree_across_implementations():
    grads = {}
    for impl in ("fft", "monarch", "direct", "auto"):
        torch.manual_seed(0)
        u = torch.randn(2, 24, 4, requires_grad=True)
        k_fwd, k_rev = torch.randn(24, 4, requires_grad=True), torch.randn(24, 4, requires_grad=True)
        bias = torch.randn(4, requires_grad=True)
        long_conv(u, k_fwd, k_rev, bias, impl).square().sum().backward()
        grads[impl] = [t.grad for t in (u, k_fwd, k_rev, bias)]
    for impl in ("monarch", "direct", "auto"):
        for a, b in zip(grads["fft"], grads[impl]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_unknown_impl():
    with pytest.raises(ValueError, match="long_conv_impl"):
        long_conv(torch.randn(1, 4, 2), torch.randn(4, 2), None, torch.randn(2), "wavelet")


def test_fft_backward_is_the_exact_adjoint():
    """The FFT form's hand-written backward (correlations instead of autograd through rfft) passes gradcheck,
    input and spectrum, in float64."""
    u = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(14, 3, dtype=torch.float64, requires_grad=True)

    def conv(u, kernel):
        return long_conv_module._FFTConv.apply(u, torch.fft.rfft(kernel.t(), n=14))
    assert torch.autograd.gradcheck(conv, (u, kernel))


@pytest.mark.parametrize("block", [3, 5])
def test_blocked_transposes_equal_one_copy(monkeypatch, block):
    """The FFT form's transposes in and out of its (B, H, n) layout, copied in blocks (several, one ragged: 23 tokens,
    7 channels), give the same outputs and gradients as one whole copy, within 1e-5 in fp32."""
    torch.manual_seed(0)
    inputs = (torch.randn(2, 23, 7), torch.randn(23, 7), torch.randn(23, 7), torch.randn(7))
    results = {}
    for step in (10**9, block):
        monkeypatch.setattr(long_conv_module, "TRANSPOSE_BLOCK", step)
        u, k_fwd, k_rev, bias = (t.clone().requires_grad_() for t in inputs)
        y = long_conv(u, k_fwd, k_rev, bias, "fft")
        assert y.is_contiguous()
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results[step] = [y.detach(), u.grad, k_fwd.grad, k_rev.grad, bias.grad]
    for a, b in zip(results[10**9], results[block]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    ref = direct_definition(*(t.double() for t in inputs))
    torch.testing.assert_close(results[block][0].double(), ref, rtol=1e-4, atol=1e-4)


CPU_SPLIT = {"cpu": ((16, "direct"), (48, "monarch"), (math.inf, "fft"))}


def test_auto_picks_per_device_and_length(monkeypatch):
    """auto = the table's form for the device type and length (first row that fits); other values pass through."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for rows in long_conv_module.AUTO_FORMS.values():  # increasing lengths, every length covered
        assert [n for n, _ in rows] == sorted(n for n, _ in rows) and rows[-1][0] == math.inf
    for seqlen in (1, 128, 8192):
        assert resolve_impl("auto", seqlen, cpu) in ("fft", "monarch", "direct")
        assert resolve_impl("auto", seqlen, cuda) == "fft"
        assert resolve_impl("direct", seqlen, cpu) == "direct"
    monkeypatch.setattr(long_conv_module, "AUTO_FORMS", CPU_SPLIT)
    assert [resolve_impl("auto", n, cpu) for n in (1, 16, 17, 48, 49, 4096)] == (
        ["direct", "direct", "monarch", "monarch", "fft", "fft"])
    assert resolve_impl("auto", 8, torch.device("meta")) == "fft"  # a device type without a table


@pytest.mark.parametrize("seqlen", [12, 40, 64])
def test_auto_with_a_split_table_matches_definition_and_compiles_in_one_graph(monkeypatch, seqlen):
    """Each form auto may pick agrees with the definition; the pick is Python on the static length, so the
    long conv (spectrum and application) stays one graph under dynamo."""
    monkeypatch.setattr(long_conv_module, "AUTO_FORMS", CPU_SPLIT)
    u, k_fwd, k_rev, bias = torch.randn(2, seqlen, 3), torch.randn(seqlen, 3), torch.randn(seqlen, 3), torch.randn(3)
    ref = direct_definition(u.double(), k_fwd.double(), k_rev.double(), bias.double())
    torch.testing.assert_close(long_conv(u, k_fwd, k_rev, bias, "auto").double(), ref, rtol=1e-4, atol=1e-4)
    form = resolve_impl("auto", seqlen, u.device)
    assert conv_spectrum(k_fwd, k_rev, seqlen, "auto").shape == conv_spectrum(k_fwd, k_rev, seqlen, form).shape
    torch._dynamo.reset()
    explained = torch._dynamo.explain(long_conv)(u, k_fwd, k_rev, bias, "auto")
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_fft_size_is_even_smooth_and_at_least_2l():
    def smooth(n):
        for p in (2, 3, 5, 7):
            while n % p == 0:
                n //= p
        return n == 1

    for seqlen in range(1, 600):
        n = fft_size(seqlen)
        assert n >= 2 * seqlen and n % 2 == 0 and smooth(n)
        assert not any(smooth(m) for m in range(2 * seqlen, n, 2))  # the smallest such
    assert fft_size(128) == 256 and fft_size(128 * 37) == 9600 and fft_size(8192) == 16384
