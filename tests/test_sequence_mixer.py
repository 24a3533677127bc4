"""The sequence mixer's short convolution equals the original's Conv1d, values and gradients; the layer's
PyTorch path is the fused kernels' reference."""
import pytest
import torch
import torch.nn.functional as F

from m2bert import M2BertConfig
from m2bert.model.seq_mixer_conv import causal_short_conv, seq_mixer_conv_reference
from m2bert.model.sequence_mixer import MonarchSequenceMixer


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


@pytest.mark.parametrize("impl", ["fft", "monarch", "direct", "auto"])
@pytest.mark.parametrize("residual", [True, False])
def test_layer_is_in_linear_reference_out_linear(impl, residual):
    """MonarchSequenceMixer (kernels: torch) = out_linear(reference(in_linear(u), filters)): the contract the
    fused kernels are tested against is the layer's own computation, in training and in eval (cached spectra)."""
    torch.manual_seed(0)
    cfg = M2BertConfig.from_preset("m2-bert-tiny", hidden_size=16, long_conv_impl=impl, residual_long_conv=residual,
                                   kernels="torch")
    layer = MonarchSequenceMixer(cfg).double()
    u = torch.randn(2, 20, 16, dtype=torch.float64)
    mask = torch.ones(2, 20, 1, dtype=torch.float64)
    mask[0, 15:] = 0
    for train in (True, False):
        layer.train(train)
        with torch.no_grad():
            k_fwd, k_rev = layer.long_conv(20)
            k2 = layer.residual_long_conv(20) if residual else (None, None)
            res_bias = layer.residual_long_conv.bias if residual else None
            expected = layer.out_linear(seq_mixer_conv_reference(
                layer.in_linear(u), u, mask, layer.short_conv.weight, layer.short_conv.bias, k_fwd, k_rev,
                layer.long_conv.bias, *k2, res_bias, impl=impl))
            torch.testing.assert_close(layer(u, mask), expected, rtol=1e-6, atol=1e-6)
