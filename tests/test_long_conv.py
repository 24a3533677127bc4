"""The three long-convolution implementations equal the direct sum of the definition."""
import pytest
import torch

from m2bert.model.long_conv import long_conv


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


@pytest.mark.parametrize("impl", ["fft", "monarch", "direct"])
@pytest.mark.parametrize("seqlen", [1, 12, 50, 64])
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
    for impl in ("fft", "monarch", "direct"):
        torch.manual_seed(0)
        u = torch.randn(2, 24, 4, requires_grad=True)
        k_fwd, k_rev = torch.randn(24, 4, requires_grad=True), torch.randn(24, 4, requires_grad=True)
        bias = torch.randn(4, requires_grad=True)
        long_conv(u, k_fwd, k_rev, bias, impl).square().sum().backward()
        grads[impl] = [t.grad for t in (u, k_fwd, k_rev, bias)]
    for impl in ("monarch", "direct"):
        for a, b in zip(grads["fft"], grads[impl]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_unknown_impl():
    with pytest.raises(ValueError, match="long_conv_impl"):
        long_conv(torch.randn(1, 4, 2), torch.randn(4, 2), None, torch.randn(2), "wavelet")
