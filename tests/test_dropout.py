"""m2bert.model.dropout: F.dropout's semantics with a cheaper mask on CPU (16 random bits per element)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m2bert.model import dropout as dropout_module
from m2bert.model.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_rate_is_one_minus_p_in_every_lane(p):
    """Each of the four 16-bit lanes a 64-bit draw feeds keeps 1 - p of its elements (a draw that left a lane's
    sign bit unset would keep all of that lane at p < 0.5)."""
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([1 << 20]), p, torch.device("cpu"))
    assert keep.dtype == torch.bool
    for lane in range(4):
        assert keep[lane::4].float().mean().item() == pytest.approx(1 - p, abs=0.005)


def test_equals_f_dropout_with_the_same_mask_forward_and_backward():
    """Kept values scaled by 1/(1-p), dropped ones 0, and the gradient likewise, within 1e-5 of F.dropout's formula
    applied with the mask drawn here."""
    torch.manual_seed(1)
    x = torch.randn(3, 40, 24, requires_grad=True)
    g = torch.randn(3, 40, 24)
    state = torch.get_rng_state()
    y = dropout(x, 0.1, training=True)
    y.backward(g)
    torch.set_rng_state(state)
    keep = keep_mask(x.shape, 0.1, x.device).float()
    torch.testing.assert_close(y, x.detach() * keep / 0.9, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, g * keep / 0.9, rtol=1e-5, atol=1e-5)


def test_reproducible_per_seed_and_identity_when_off():
    x = torch.randn(8, 64)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(dropout(x, 0.1, training=True))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x
    module = Dropout(0.1).eval()
    assert module(x) is x and repr(module) == repr(torch.nn.Dropout(0.1))


def test_compiling_uses_f_dropout(monkeypatch):
    """Under torch.compile (inductor fuses its own dropout) it is F.dropout, draw for draw."""
    monkeypatch.setattr(dropout_module.torch.compiler, "is_compiling", lambda: True)
    x = torch.randn(16, 32)
    torch.manual_seed(2)
    ours = dropout(x, 0.25, training=True)
    torch.manual_seed(2)
    assert torch.equal(ours, F.dropout(x, 0.25, True))
