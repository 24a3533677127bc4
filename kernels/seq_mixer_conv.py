"""Fused sequence-mixer convolution: everything between ``in_linear`` and ``out_linear``.

Given ``proj = in_linear(u)`` (B, L, 3H), the layer input ``u`` (B, L, H) and the padding mask,
one kernel computes, per (batch row, channel block), without writing intermediates:
mask → depthwise causal short conv (kernel 3) on x1, x2, v → w = v·x1 (masked) → the
bidirectional long convolution of w (circular, size N ≥ 2L, as a Monarch-factored DFT:
two ``tl.dot`` stages with twiddles, real and imaginary parts apart) → + w·bias → ·x2 →
+ the residual long convolution of the masked u with its own filter (+ its skip).

The filter spectra are computed once per call with ``torch.fft`` (they do not depend on the
batch) and the 1/N is folded into them. Backward is a kernel too: it recomputes the forward
intermediates, convolves with the conjugate spectra (the adjoint), writes the gradient of
the short conv's output and of u, and reduces the filter-spectrum gradients Σ_b DZ·conj(W)
over the batch rows of its group (partials per group, summed and inverse-transformed once in
PyTorch). A second small kernel does the short conv's backward (d proj, weight and bias).

Algorithm per length: every L uses N = max(256, next_pow2(2L)) = N1·N2 (N1, N2 ≥ 16, tl.dot's
minimum), so lengths that are not powers of two are padded. Whole-sequence tiles are right
for the pretraining lengths; for L ≥ 4096 a three-factor, multi-pass variant is needed on a
GPU (left for a GPU session, see the report in notes).

:func:`reference` is the model's own composition (``causal_short_conv`` and ``long_conv``).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from m2bert.kernels._loader import kernel_module
from m2bert.model.long_conv import long_conv
from m2bert.model.sequence_mixer import causal_short_conv


def reference(proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd=None, k2_rev=None, bias2=None,
              impl: str = "fft"):
    """The PyTorch reference, exactly MonarchSequenceMixer.forward between in_linear and out_linear.

    proj: (B, L, 3H) output of in_linear; u: (B, L, H) layer input (after the optional norm);
    mask: (B, L, 1) with 0 at padding, or None; sc_weight (3H, 1, 3), sc_bias (3H,): the short
    conv; k_fwd, k_rev (L, H), bias (H,): the long filter; k2_*, bias2: the residual filter or None.
    """
    h = u.shape[-1]
    if mask is not None:
        proj = proj * mask
    proj = causal_short_conv(proj, sc_weight, sc_bias)
    x1, x2, v = proj.split(h, dim=-1)
    v = v * x1
    if mask is not None:
        v = v * mask
    y = long_conv(v, k_fwd, k_rev, bias, impl) * x2
    if k2_fwd is not None:
        u_in = u * mask if mask is not None else u
        y = y + long_conv(u_in, k2_fwd, k2_rev, bias2, impl)
    return y


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def plan(seqlen: int, channels: int) -> tuple[int, int, int]:
    """(N1, N2, BH): the DFT factors of the convolution size and the channel block."""
    n = max(256, _next_pow2(2 * seqlen))
    n1 = 1 << (int(math.log2(n)) // 2)
    bh = min(16, _next_pow2(channels), max(1, 8192 // n))
    return n1, n // n1, bh


@lru_cache(maxsize=32)
def _dft_constants(n1: int, n2: int, device: str) -> tuple[torch.Tensor, ...]:
    """cos / −sin of the N1- and N2-point DFT matrices and of the twiddles ω_N^{k1·n2} (fp32)."""
    def trig(a: int, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ang = 2 * math.pi * torch.outer(torch.arange(a, dtype=torch.float64), torch.arange(b, dtype=torch.float64)) / n
        return (torch.cos(ang).float().contiguous().to(device), (-torch.sin(ang)).float().contiguous().to(device))

    c1, s1 = trig(n1, n1, n1)
    c2, s2 = trig(n2, n2, n2)
    twr, twi = trig(n1, n2, n1 * n2)
    return c1, s1, c2, s2, twr, twi


def _spectrum(k_fwd: torch.Tensor, k_rev: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DFT/N of the size-n circular kernel [k_fwd, 0…, flip(k_rev)] (natural order, fp32, (n, H))."""
    seqlen, h = k_fwd.shape
    kernel = torch.zeros(n, h, device=k_fwd.device, dtype=torch.float32)
    kernel[:seqlen] = k_fwd.float()
    if k_rev is not None:
        kernel[n - seqlen:] += k_rev.float().flip(0)
    spec = torch.fft.fft(kernel, dim=0) / n
    return spec.real.contiguous(), spec.imag.contiguous()


def _groups(batch: int, n_hblocks: int, device: torch.device, interpret: bool) -> int:
    """Batch rows are split into G groups, each reduced by one program per channel block."""
    if interpret or device.type != "cuda":
        return min(batch, 2)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(batch, (2 * sms) // max(1, n_hblocks)))


class _SeqMixerConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd, k2_rev, bias2):
        bsz, seqlen, h = u.shape
        mod, interpret = kernel_module("seq_mixer_conv", proj.device)
        n1, n2, bh = plan(seqlen, h)
        consts = _dft_constants(n1, n2, str(proj.device))
        kr, ki = _spectrum(k_fwd, k_rev, n1 * n2)
        has_res = k2_fwd is not None
        k2r, k2i = _spectrum(k2_fwd, k2_rev, n1 * n2) if has_res else (kr, ki)
        scw = sc_weight.reshape(-1, 3).contiguous()
        scb = sc_bias.contiguous()
        bias_c = bias.contiguous()
        bias2_c = bias2.contiguous() if has_res else bias_c
        m = mask.reshape(bsz, seqlen) if mask is not None else proj
        y = torch.empty(bsz, seqlen, h, device=u.device, dtype=proj.dtype)
        prec = "ieee" if proj.dtype == torch.float32 else "tf32"
        grid = (triton_cdiv(h, bh), bsz)
        mod.seqmix_fwd_kernel[grid](
            proj, u, m, scw, scb, kr, ki, bias_c, k2r, k2i, bias2_c, *consts, y,
            seqlen, h, *proj.stride(), *u.stride(),
            m.stride(0) if mask is not None else 0, m.stride(1) if mask is not None else 0, *y.stride(),
            HAS_MASK=mask is not None, HAS_RES=has_res, N1=n1, N2=n2, BH=bh, PREC=prec,
        )
        ctx.save_for_backward(proj, u, mask, scw, scb, kr, ki, bias_c, k2r, k2i, bias2_c)
        ctx.meta = (has_res, k_rev is not None, k2_rev is not None if has_res else False,
                    sc_weight.shape, sc_weight.dtype, k_fwd.dtype, bias.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        proj, u, mask, scw, scb, kr, ki, bias, k2r, k2i, bias2 = ctx.saved_tensors
        has_res, has_rev, has_rev2, sc_shape, sc_dtype, k_dtype, b_dtype = ctx.meta
        bsz, seqlen, h = u.shape
        mod, interpret = kernel_module("seq_mixer_conv", proj.device)
        n1, n2, bh = plan(seqlen, h)
        n = n1 * n2
        consts = _dft_constants(n1, n2, str(proj.device))
        dy = dy.contiguous()
        m = mask.reshape(bsz, seqlen) if mask is not None else proj
        ms = (m.stride(0), m.stride(1)) if mask is not None else (0, 0)
        n_hb = triton_cdiv(h, bh)
        groups = _groups(bsz, n_hb, proj.device, interpret)
        dev = proj.device
        ds = torch.empty(bsz, seqlen, 3 * h, device=dev, dtype=torch.float32)
        du = torch.empty(bsz, seqlen, h, device=dev, dtype=u.dtype) if has_res else ds
        gk = torch.empty(2, groups, n, h, device=dev, dtype=torch.float32)
        gk2 = torch.empty(2, groups, n, h, device=dev, dtype=torch.float32) if has_res else gk
        dbias = torch.empty(groups, h, device=dev, dtype=torch.float32)
        dbias2 = torch.empty(groups, h, device=dev, dtype=torch.float32) if has_res else dbias
        prec = "ieee" if proj.dtype == torch.float32 else "tf32"
        mod.seqmix_bwd_kernel[(n_hb, groups)](
            proj, u, m, scw, scb, kr, ki, bias, k2r, k2i, bias2, *consts,
            dy, ds, du, gk, gk2, dbias, dbias2,
            bsz, seqlen, h, groups,
            *proj.stride(), *u.stride(), *ms, *dy.stride(), *ds.stride(), *du.stride(),
            HAS_MASK=mask is not None, HAS_RES=has_res, N1=n1, N2=n2, BH=bh, PREC=prec,
        )
        c = 3 * h
        bc = min(64, _next_pow2(c))
        bl = 64
        dproj = torch.empty_like(proj)
        dwp = torch.empty(groups, c, 3, device=dev, dtype=torch.float32)
        dbp = torch.empty(groups, c, device=dev, dtype=torch.float32)
        mod.shortconv_bwd_kernel[(triton_cdiv(c, bc), groups)](
            ds, proj, m, scw, dproj, dwp, dbp,
            bsz, seqlen, c, groups,
            *ds.stride(), *proj.stride(), *ms, *dproj.stride(),
            HAS_MASK=mask is not None, BL=bl, BC=bc,
        )

        def filter_grads(parts: torch.Tensor, rev: bool):
            spec = torch.complex(parts[0].sum(0), parts[1].sum(0))
            dk = torch.fft.ifft(spec, dim=0).real  # d/d kernel[j] = Σ_b Σ_t dz[t]·w[t − j mod N]
            d_fwd = dk[:seqlen].to(k_dtype)
            d_rev = dk.flip(0)[:seqlen].to(k_dtype) if rev else None
            return d_fwd, d_rev

        d_kf, d_kr = filter_grads(gk, has_rev)
        d_k2f, d_k2r, d_b2 = (None, None, None)
        if has_res:
            d_k2f, d_k2r = filter_grads(gk2, has_rev2)
            d_b2 = dbias2.sum(0).to(b_dtype)
        return (dproj, du if has_res else None, None,
                dwp.sum(0).reshape(sc_shape).to(sc_dtype), dbp.sum(0).to(sc_dtype),
                d_kf, d_kr, dbias.sum(0).to(b_dtype), d_k2f, d_k2r, d_b2)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def seq_mixer_conv_triton(proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd=None, k2_rev=None,
                          bias2=None):
    """Same contract as :func:`reference`, computed by the fused Triton kernels."""
    seqlen = u.shape[1]
    k_fwd = k_fwd[:seqlen]
    k_rev = k_rev[:seqlen] if k_rev is not None else None
    if k2_fwd is not None:
        k2_fwd = k2_fwd[:seqlen]
        k2_rev = k2_rev[:seqlen] if k2_rev is not None else None
    if mask is not None:
        mask = mask.to(proj.dtype)
    return _SeqMixerConv.apply(proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd, k2_rev, bias2)
