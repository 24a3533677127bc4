"""The bidirectional long convolution of the sequence mixer.

``y[t] = Σ_{s<L} k_fwd[s]·u[t−s] + Σ_{m=1..L} k_rev[m−1]·u[t+m] + bias·u[t]`` per channel,
i.e. a circular convolution of size 2L with the kernel ``[k_fwd, flip(k_rev)]`` on the
zero-padded input, keeping the first L outputs (notes/monarch-fft.md).

Three interchangeable implementations, selected by ``config.long_conv_impl``:
``fft`` (torch.fft), ``monarch`` (the DFT as Monarch GEMMs, the form the GPU kernels use)
and ``direct`` (a Toeplitz matmul, competitive only for short sequences), and ``auto``, the
fastest of them for the device and length (:data:`AUTO_FORMS`). Activations stay in
(batch, length, channels) layout at the interface.
"""
from __future__ import annotations

import math

import torch

from m2bert.model.monarch import monarch_dft, monarch_factors, monarch_idft


# ``auto``: per device type, (longest length, form) in increasing length, the first that fits wins; from
# bench/long_conv_forms.py (bench/results/long_conv_forms_cpu*.json: forward + backward of the long conv
# and of one m2-bert-base layer, batch 16, 1 and 2 threads). On CUDA the fused Triton kernels run the
# sequence mixer (kernels=auto); where PyTorch does, cuFFT.
AUTO_FORMS: dict[str, tuple[tuple[float, str], ...]] = {
    "cpu": ((math.inf, "fft"),),
    "cuda": ((math.inf, "fft"),),
}


def resolve_impl(impl: str, seqlen: int, device: torch.device) -> str:
    """The form ``impl`` stands for at this length on this device: itself, or for ``auto`` the table's pick.

    Python on the static length and device type: no tensor is read (no host sync), and under
    torch.compile it is decided once while tracing, so it adds no graph break.
    """
    if impl != "auto":
        return impl
    for longest, form in AUTO_FORMS.get(device.type, ()):
        if seqlen <= longest:
            return form
    return "fft"  # a device type without a table


def bidirectional_kernel(k_fwd: torch.Tensor, k_rev: torch.Tensor | None, n: int | None = None) -> torch.Tensor:
    """(L, H) forward and reverse filters -> the (n, H) circular kernel, n ≥ 2L (default 2L): forward taps at
    lags 0..L-1, reverse taps at lags -1..-L (the last L rows), zeros between."""
    rev = k_rev.flip(0) if k_rev is not None else torch.zeros_like(k_fwd)
    gap = (n or 2 * k_fwd.shape[0]) - 2 * k_fwd.shape[0]
    if gap == 0:
        return torch.cat([k_fwd, rev], dim=0)
    return torch.cat([k_fwd, k_fwd.new_zeros(gap, k_fwd.shape[1]), rev], dim=0)


def fft_size(seqlen: int) -> int:
    """The FFT length for a length-``seqlen`` input: the smallest even n ≥ 2·seqlen whose prime factors are
    2, 3, 5 or 7. Any n ≥ 2L - 1 gives the same convolution (no wrap-around reaches the kept outputs), and
    pocketfft and cuFFT are 1.5-2x slower per point at sizes with a large prime factor (2·128·37 = 9472:
    73 ms vs 36 ms at 9600, 4 × 192 channels, CPU), which length-bucketed batches (any multiple of 128) hit."""
    n = 2 * seqlen
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 2


def conv_spectrum(k_fwd: torch.Tensor, k_rev: torch.Tensor | None, seqlen: int, impl: str = "fft") -> torch.Tensor:
    """The filters in the form ``impl`` applies them; batch-independent, so computed once per
    step (and, in inference, once per set of weights: see ``ImplicitFilter.spectrum``)."""
    impl = resolve_impl(impl, seqlen, k_fwd.device)
    k_rev = None if k_rev is None else k_rev[:seqlen]
    if impl == "fft":
        n = fft_size(seqlen)
        return torch.fft.rfft(bidirectional_kernel(k_fwd[:seqlen], k_rev, n).float().t(), n=n)  # (H, n/2 + 1)
    kernel = bidirectional_kernel(k_fwd[:seqlen], k_rev).float()
    n = kernel.shape[0]
    if impl == "monarch":
        # In the same digit-reversed order as the input's spectrum: no permutation needed.
        return monarch_dft(kernel, monarch_factors(n), dim=0) / n  # (n, H)
    if impl == "direct":
        t = torch.arange(seqlen, device=kernel.device)
        return kernel[(t[:, None] - t[None, :]) % n]  # Toeplitz (L_out, L_in, H)
    raise ValueError(f"unknown long_conv_impl {impl!r}; choose fft, monarch, direct or auto")


def apply_long_conv(u: torch.Tensor, spectrum: torch.Tensor, bias: torch.Tensor, impl: str = "fft") -> torch.Tensor:
    """Convolve u (B, L, H) with filters given by :func:`conv_spectrum`, plus the skip ``bias·u``.

    In fp32 whatever u's dtype, returned in u's dtype, as the original's ``fftconv`` does under autocast (the skip
    term added before the cast, and the result does not silently widen a bf16 layer to fp32)."""
    impl = resolve_impl(impl, u.shape[1], u.device)
    u32 = u.float()
    if impl == "fft":  # a fresh contiguous output: the skip term is added in place
        return _FFTConv.apply(u32, spectrum).addcmul_(u32, bias).to(u.dtype)
    if impl == "monarch":
        y = _monarch_conv(u32, spectrum)
    elif impl == "direct":
        y = torch.einsum("tsh,bsh->bth", spectrum.float(), u32)
    else:
        raise ValueError(f"unknown long_conv_impl {impl!r}; choose fft, monarch, direct or auto")
    return torch.addcmul(y, u32, bias).to(u.dtype)  # + bias·u in the same pass


def long_conv(
    u: torch.Tensor,
    k_fwd: torch.Tensor,
    k_rev: torch.Tensor | None,
    bias: torch.Tensor,
    impl: str = "fft",
) -> torch.Tensor:
    """Apply the long convolution to u (B, L, H) with filters (L, H) and skip weight (H,)."""
    return apply_long_conv(u, conv_spectrum(k_fwd, k_rev, u.shape[1], impl), bias, impl)


class _FFTConv(torch.autograd.Function):
    """``irfft(rfft(u, 2L) · K)[:L]`` with its backward written out as two more real FFTs.

    Autograd's backward of ``rfft`` zero-fills a full complex spectrum and runs a complex FFT of
    twice the length (plus the copies of the slice and pad backwards); the adjoint of a zero-padded
    circular convolution is the correlation ``irfft(rfft(gy, 2L) · conj(K))[:L]``, and the spectrum's
    gradient is ``Σ_batch conj(U) · rfft(gy, 2L)`` weighted as ``irfft``'s backward weights it.
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, k_f: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        seqlen, n = u.shape[1], 2 * (k_f.shape[-1] - 1)
        # The FFT runs along the contiguous axis: one transposed copy in and out is cheaper than
        # a strided transform (measured on CPU: 1.1x at L=128, 1.8x at L=2048).
        u_f = torch.fft.rfft(_padded_transpose(u, n))  # (B, H, n/2 + 1)
        ctx.save_for_backward(u_f, k_f)
        return _unpadded_transpose(torch.fft.irfft(u_f * k_f, n=n), seqlen)

    @staticmethod
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        u_f, k_f = ctx.saved_tensors
        seqlen, n = gy.shape[1], 2 * (k_f.shape[-1] - 1)
        g_f = torch.fft.rfft(_padded_transpose(gy, n))
        gu = gk = None
        if ctx.needs_input_grad[0]:
            gu = _unpadded_transpose(torch.fft.irfft(g_f * k_f.conj(), n=n), seqlen)
        if ctx.needs_input_grad[1]:
            # irfft's backward: rfft of the gradient scaled by 1/n, the bins that stand for two
            # (all but DC and Nyquist) counted twice.
            weight = torch.full((k_f.shape[-1],), 2.0 / n, device=gy.device)
            weight[0] = weight[-1] = 1.0 / n
            gk = (g_f * u_f.conj()).sum(0) * weight
        return gu, gk


# Width of the blocks _copy_transposed copies: one strided copy of a whole (L, H) matrix misses the cache on every
# element at long lengths; in blocks of 64 along the destination's contiguous axis the source rows a block reads
# stay in cache (about 5x faster at 8192 x 768, 1.3-7x at 128-2048 tokens: bench/results/transpose_blocks_cpu.md).
TRANSPOSE_BLOCK = 64


def _copy_transposed(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``dst.copy_(src.transpose(1, 2))`` for 3-d tensors, in cache-sized blocks along ``dst``'s last axis on CPU (one
    copy elsewhere: a GPU's copy kernel tiles through shared memory, and blocks would only add launches; and when
    compiling: inductor tiles its own transposes)."""
    width = dst.shape[-1]
    step = width if dst.device.type != "cpu" or torch.compiler.is_compiling() else TRANSPOSE_BLOCK
    for start in range(0, width, step):
        stop = min(start + step, width)
        dst[..., start:stop].copy_(src[:, start:stop].transpose(1, 2))
    return dst


def _unpadded_transpose(y: torch.Tensor, seqlen: int) -> torch.Tensor:
    """The first ``seqlen`` outputs of y (B, H, n), as a contiguous (B, seqlen, H): element-wise work on it then
    reads memory in order (an add on the strided view was 7x slower at 8192 tokens)."""
    return _copy_transposed(y.new_empty(y.shape[0], seqlen, y.shape[1]), y[..., :seqlen])


def _padded_transpose(x: torch.Tensor, n: int) -> torch.Tensor:
    """x (B, L, H) as (B, H, n), zero-padded: what ``rfft(x.transpose(1, 2), n=n)`` builds internally,
    but zeroing only the padding instead of the whole buffer before the copy, and copying in blocks."""
    b, seqlen, h = x.shape
    out = x.new_empty(b, h, n)
    out[..., seqlen:].zero_()
    _copy_transposed(out[..., :seqlen], x)
    return out


def _monarch_conv(u: torch.Tensor, k_f: torch.Tensor) -> torch.Tensor:
    seqlen, n = u.shape[1], k_f.shape[0]
    factors = monarch_factors(n)
    u_pad = torch.nn.functional.pad(u, (0, 0, 0, n - seqlen))
    u_f = monarch_dft(u_pad, factors, dim=1)
    return monarch_idft(u_f * k_f, factors, dim=1).real[:, :seqlen]  # lands in natural order
