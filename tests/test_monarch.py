"""Monarch ops: the factorised DFT equals the FFT; block-diagonal matmuls equal dense ones."""
import pytest
import torch
import torch.nn.functional as F

from m2bert.model.monarch import (
    BlockdiagLinear,
    blockdiag_multiply,
    monarch_dft,
    monarch_factors,
    monarch_glu,
    monarch_idft,
    monarch_permutation,
)


@pytest.mark.parametrize("n", [8, 24, 96, 256, 200, 1024, 4096, 8192])
def test_monarch_dft_equals_fft(n):
    factors = monarch_factors(n)
    assert torch.tensor(factors).prod().item() == n
    x = torch.randn(3, n, 5, dtype=torch.float64).to(torch.complex64)
    ours = monarch_dft(x, factors, dim=1)
    perm = monarch_permutation(n, factors)
    assert sorted(perm.tolist()) == list(range(n))
    ref = torch.fft.fft(x, dim=1)[:, perm]
    scale = ref.abs().max()
    assert ((ours - ref).abs().max() / scale).item() < 1e-5
    back = monarch_idft(ours, factors, dim=1) / n
    assert ((back - x).abs().max()).item() < 1e-4


def test_long_inputs_use_order_three():
    assert len(monarch_factors(256)) == 2
    assert len(monarch_factors(4096)) == 3 and len(monarch_factors(16384)) == 3
    assert monarch_factors(8192) == (32, 16, 16)


def test_blockdiag_equals_dense_block_diagonal():
    w = torch.randn(4, 6, 5)
    x = torch.randn(2, 3, 20)
    dense = torch.block_diag(*w)  # (24, 20)
    torch.testing.assert_close(blockdiag_multiply(x, w), x @ dense.t(), rtol=1e-5, atol=1e-5)


def test_blockdiag_linear_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="divisible"):
        BlockdiagLinear(10, 12, nblocks=4)


@pytest.mark.parametrize("training", [False, True])
def test_monarch_glu_equals_composition(training):
    h, i = 16, 32
    w_in, w_out, b = torch.randn(4, 2 * i // 4, h // 4), torch.randn(4, h // 4, i // 4), torch.randn(h)
    x = torch.randn(3, 7, h)
    dense = blockdiag_multiply(x, w_in)
    gate, value = dense.split(i, dim=-1)
    ref = blockdiag_multiply(F.gelu(gate) * value, w_out) + b
    torch.manual_seed(1)
    ours = monarch_glu(x, w_in, w_out, b, dropout=0.0, training=training)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_inference_glu_path_equals_training_path():
    h, i = 16, 32
    w_in, w_out, b = torch.randn(4, 2 * i // 4, h // 4), torch.randn(4, h // 4, i // 4), torch.randn(h)
    x = torch.randn(3, 7, h)
    with torch.no_grad():
        fast = monarch_glu(x, w_in, w_out, b)
    torch.testing.assert_close(fast, monarch_glu(x, w_in, w_out, b).detach(), rtol=1e-5, atol=1e-5)
