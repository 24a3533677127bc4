"""Monarch operations: block-diagonal matmuls and the DFT as a product of Monarch factors.

Both halves of M2 are built from these. The dimension mixer uses block-diagonal linears
(a Monarch matrix with the permutations absorbed), and the sequence mixer's long
convolution is a DFT, which for N = N1·N2 (or N1·N2·N3) is two (three) batched GEMMs with
small dense DFT blocks and elementwise twiddles in between (notes/monarch-fft.md).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from m2bert.model.dropout import dropout as apply_dropout


def blockdiag_multiply(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y = x @ blockdiag(W_1, ..., W_k)^T.

    x: (..., k·p); weight: (k, q, p) -> (..., k·q). One GEMM per block on a column slice
    of x (no copy of the input) and one concatenation of the outputs: measured faster on
    CPU than a batched GEMM, which needs the input and output transposed in memory.
    """
    nblocks, q, p = weight.shape
    x2 = x.reshape(-1, nblocks * p)
    out = torch.cat([x2[:, i * p:(i + 1) * p] @ weight[i].t() for i in range(nblocks)], dim=1)
    return out.reshape(*x.shape[:-1], nblocks * q)


def monarch_glu(
    x: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    b_out: torch.Tensor | None,
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """``wo(dropout(GELU(gate) · value))`` with ``[gate, value] = x @ blockdiag(w_in)^T``.

    The first half of ``w_in``'s blocks produce the gate and the second half the value, so
    the GLU pairs block i with block i + k/2 and the (N, 2I) product is never assembled in
    natural layout: one batched GEMM writes (k, N, q) blocks, the activation runs on the two
    contiguous halves, and ``wo`` is a second batched GEMM over the activation's blocks. No
    column slices, so the backward needs no zero-filled gradient buffers either. This is the
    reference the fused GPU kernel follows.
    """
    k, q, p = w_in.shape
    k_out, q_out, p_out = w_out.shape
    if k % 2 or q % p_out or k_out != k:
        raise ValueError(f"monarch_glu: blocks {tuple(w_in.shape)} and {tuple(w_out.shape)} do not pair up")
    if not torch.is_grad_enabled():
        return _monarch_glu_inference(x, w_in, w_out, b_out)
    xb = x.reshape(-1, k, p).transpose(0, 1)  # (k, N, p)
    gate, value = torch.bmm(xb, w_in.transpose(1, 2)).chunk(2, dim=0)  # (k/2, N, q) each
    act = apply_dropout(F.gelu(gate) * value, dropout, training)  # features [i·q, (i+1)·q) of the I-wide input
    n = act.shape[1]
    # wo's input blocks (width p_out) are consecutive pieces of the activation blocks.
    act_blocks = act.reshape(k // 2, n, q // p_out, p_out).transpose(1, 2).reshape(k, n, p_out)
    y = torch.bmm(act_blocks, w_out.transpose(1, 2)).transpose(0, 1).reshape(*x.shape[:-1], k * q_out)
    return y if b_out is None else y + b_out


def _monarch_glu_inference(x: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor | None) -> torch.Tensor:
    """The same product without a backward to pay for: GEMMs on column slices, no copies of
    the inputs (measured 1.3× faster on CPU than the batched form; slices would cost the
    backward zero-filled gradient buffers, hence the batched form when training)."""
    k, q, p = w_in.shape
    p_out = w_out.shape[2]
    x2 = x.reshape(-1, k * p)
    block = [x2[:, i * p:(i + 1) * p] @ w_in[i].t() for i in range(k)]
    acts = [F.gelu(block[i]).mul_(block[i + k // 2]) for i in range(k // 2)]
    per = q // p_out
    outs = [acts[j // per][:, (j % per) * p_out:(j % per + 1) * p_out] @ w_out[j].t() for j in range(k)]
    y = torch.cat(outs, dim=-1)
    if b_out is not None:
        y += b_out
    return y.reshape(*x.shape[:-1], y.shape[-1])


class BlockdiagLinear(nn.Module):
    """A linear layer whose weight is block-diagonal with ``nblocks`` dense blocks.

    Parameter layout (``weight``: (nblocks, out/nblocks, in/nblocks), ``bias``: (out,))
    matches the original implementation so checkpoints load unchanged.
    """

    def __init__(self, in_features: int, out_features: int, nblocks: int = 4, bias: bool = True) -> None:
        super().__init__()
        if in_features % nblocks or out_features % nblocks:
            raise ValueError(f"BlockdiagLinear({in_features}, {out_features}) needs sizes divisible by nblocks={nblocks}")
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        self.weight = nn.Parameter(torch.empty(nblocks, out_features // nblocks, in_features // nblocks))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming-uniform per block, as nn.Linear does for a dense layer of the block's fan-in.
        fan_in = self.weight.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = blockdiag_multiply(x, self.weight)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, nblocks={self.nblocks}, bias={self.bias is not None}"


# ---------------------------------------------------------------------------------------
# The DFT as Monarch factors.
# ---------------------------------------------------------------------------------------

def monarch_factors(n: int, max_block: int = 32) -> tuple[int, ...]:
    """Split n into 2 (or 3 for long inputs) factors, each at most ``max_block`` when possible.

    Mirrors FlashFFTConv's choices (16·16 for 256, 16·16·16 for 4096, 32·16·16 for 8192).
    Lengths with no good factorisation fall back to fewer, larger factors.
    """
    if n <= max_block:
        return (n,)
    order = 2 if n <= max_block * max_block else 3
    factors: list[int] = []
    rest = n
    for i in range(order, 1, -1):
        target = round(rest ** (1.0 / i))
        f = _closest_divisor(rest, target)
        factors.append(f)
        rest //= f
    factors.append(rest)
    return tuple(sorted(factors, reverse=True))


def _closest_divisor(n: int, target: int) -> int:
    best = 1
    for d in range(1, n + 1):
        if n % d == 0 and abs(d - target) < abs(best - target):
            best = d
    return best


@lru_cache(maxsize=64)
def _dft_matrix(n: int, device: str, inverse: bool) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    sign = 1.0 if inverse else -1.0
    return torch.polar(torch.ones(n, n, dtype=torch.float64), sign * 2 * math.pi * torch.outer(k, k) / n).to(
        device=device, dtype=torch.complex64
    )


@lru_cache(maxsize=64)
def _twiddles(n1: int, m: int, device: str, inverse: bool) -> torch.Tensor:
    k1 = torch.arange(n1, dtype=torch.float64)[:, None]
    j = torch.arange(m, dtype=torch.float64)[None, :]
    sign = 1.0 if inverse else -1.0
    return torch.polar(torch.ones(n1, m, dtype=torch.float64), sign * 2 * math.pi * k1 * j / (n1 * m)).to(
        device=device, dtype=torch.complex64
    )


def monarch_dft(x: torch.Tensor, factors: tuple[int, ...], dim: int = -2) -> torch.Tensor:
    """Unnormalised DFT along ``dim`` as Monarch factors; output in digit-reversed order.

    For N = N1·M: view n = n1·M + m, apply F_{N1} along n1 (a GEMM), multiply by twiddles
    ω_N^{k1·m}, then recurse with the DFT of length M along m. Frequency k1 + N1·k' lands at
    position (k1, slot of k'), see :func:`monarch_permutation`. No transpose back is needed:
    the filter spectrum is permuted once to this order instead.
    """
    x = x.movedim(dim, -2)
    out = _monarch_dft_last2(x.to(torch.complex64), factors, inverse=False)
    return out.movedim(-2, dim)


def monarch_idft(x: torch.Tensor, factors: tuple[int, ...], dim: int = -2) -> torch.Tensor:
    """Inverse of :func:`monarch_dft` (unnormalised): digit-reversed input, natural output."""
    x = x.movedim(dim, -2)
    out = _monarch_dft_last2(x, factors, inverse=True)
    return out.movedim(-2, dim)


def _monarch_dft_last2(x: torch.Tensor, factors: tuple[int, ...], inverse: bool) -> torch.Tensor:
    # x: (..., N, C), transform along N.
    n = x.shape[-2]
    device = str(x.device)
    if len(factors) == 1:
        return torch.matmul(_dft_matrix(n, device, inverse), x)
    n1, m = factors[0], n // factors[0]
    batch, c = x.shape[:-2], x.shape[-1]
    twiddle = _twiddles(n1, m, device, inverse)[..., None]  # (n1, m, 1)
    f1 = _dft_matrix(n1, device, inverse)
    if not inverse:
        xv = x.reshape(*batch, n1, m * c)
        a = torch.matmul(f1, xv).reshape(*batch, n1, m, c) * twiddle  # along n1, then twiddle
        return _monarch_dft_last2(a, factors[1:], inverse=False).reshape(*batch, n, c)
    # Mirror image: inverse of the inner factors along the row, conjugate twiddles, F^-1 along k1.
    rows = _monarch_dft_last2(x.reshape(*batch, n1, m, c), factors[1:], inverse=True) * twiddle
    return torch.matmul(f1, rows.reshape(*batch, n1, m * c)).reshape(*batch, n, c)


def monarch_permutation(n: int, factors: tuple[int, ...]) -> torch.Tensor:
    """perm[j] = the natural frequency index stored at position j of :func:`monarch_dft`."""
    if len(factors) == 1:
        return torch.arange(n)
    n1, m = factors[0], n // factors[0]
    inner = monarch_permutation(m, factors[1:])  # (m,)
    k1 = torch.arange(n1)[:, None]
    return (k1 + n1 * inner[None, :]).reshape(-1)
