"""The sequence mixer's short convolution equals the original's Conv1d, values and gradients."""
import torch
import torch.nn.functional as F

from m2bert.model.sequence_mixer import causal_short_conv


def conv1d_reference(x, weight, bias):
    """The original: Conv1d(groups=C, padding=2) on (B, C, L), keep the first L outputs."""
    seqlen = x.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=2, groups=x.shape[-1])[..., :seqlen]
    return y.transpose(1, 2)


def test_short_conv_matches_conv1d_with_gradients():
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 9, 6, dtype=torch.float64)
    ours = causal_short_conv(x, w, b)
    ref = conv1d_reference(x, w, b)
    torch.testing.assert_close(ours, ref)
    grads = torch.autograd.grad(ours, (x, w, b), g)
    ref_grads = torch.autograd.grad(ref, (x, w, b), g)
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r)
    assert torch.autograd.gradcheck(causal_short_conv, (x, w, b))
