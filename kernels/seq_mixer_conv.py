"""Fused sequence-mixer convolution: everything between ``in_linear`` and ``out_linear``.

Given ``proj = in_linear(u)`` (B, L, 3H), the layer input ``u`` (B, L, H) and the padding mask,
the kernels compute, without writing the intermediates of the PyTorch composition:
mask → depthwise causal short conv (kernel 3) on x1, x2, v → w = v·x1 (masked) → the
bidirectional long convolution of w (circular, size N ≥ 2L, as a Monarch-factored DFT:
``tl.dot`` stages with twiddles between, real and imaginary parts apart) → + w·bias → ·x2 →
+ the residual long convolution of the masked u with its own filter (+ its skip).

The filter spectra are computed once per call with ``torch.fft`` (they do not depend on the
batch) and the 1/N is folded into them. Backward is kernels too: they recompute the forward
intermediates, convolve with the conjugate spectra (the adjoint), write the gradient of the
short conv's output and of u, and reduce the filter-spectrum gradients Σ_b DZ·conj(W) over
the batch rows of a group (partials per group, summed and inverse-transformed once in
PyTorch); the gated and the residual convolution are separate programs there. A small kernel
does the short conv's backward (d proj, weight and bias).

Two algorithms, same arithmetic (:func:`plan` picks one per length): every L uses the
convolution size N = max(256, next_pow2(2L)) = N1·N2 (N1, N2 ≥ 16, tl.dot's minimum), so
lengths that are not powers of two are padded.

* ``tile`` (default for N = 256, L ≤ 128, the pretraining length): one program holds the whole
  (N, BH) tile of one batch row; nothing but the inputs and outputs touches memory.
* ``passes`` (default for 128 < L ≤ 8192): the four-step FFT in three kernels that pass the
  partial transforms through an fp32 scratch (B, N1, N2, H); each program holds one block of
  columns or rows, so the tiles stay small however long the input.

Longer inputs than :data:`MAX_SEQLEN` are not supported by the kernels (the model then uses
its PyTorch path, see ``m2bert.model.kernel_switch.seq_mixer_fits``).

The PyTorch reference (what the model runs with ``kernels: torch``, and what the tests compare
with) is the model's ``m2bert.model.seq_mixer_conv.seq_mixer_conv_reference``; this package
depends on torch and triton only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from m2bert.kernels._loader import kernel_module

# The longest input of the fused kernels; longer inputs take the model's PyTorch path.
MAX_SEQLEN = 8192


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# Per-length choices, from what the kernels need when compiled for sm_90 (bench/kernels_aot.py, no
# GPU needed): whole-sequence tiles spill registers heavily beyond N = 256 (L = 128), the three passes
# do not; bench/kernels.py times both where both apply, to confirm on a GPU.
TILE_MAX_N = 256  # the largest convolution size done in whole-sequence tiles by default
TILE_ELEMENTS = 2048  # N·BH of a tile: 8 warps hold a dozen such fp32 tiles without spilling
MAX_N = 2 * MAX_SEQLEN  # 128 · 128: N1, N2 ≤ 128, the DFT blocks stay tl.dot-sized
PASSES_MIN_N = 512  # the passes multiply by half of F_N1 (N1/2 ≥ 16) and by F_N2 (N2 ≥ 16)


@dataclass(frozen=True)
class Plan:
    """How one sequence length is computed: the DFT factors N = N1·N2 and the block sizes."""

    algorithm: str  # "tile" or "passes"
    n1: int
    n2: int
    bh: int  # channels per program
    bn2: int = 0  # passes: n2 columns per program in passes 1 and 3
    bk1: int = 0  # passes: k1 rows per program in pass 2
    warps: int = 4  # num_warps of the launches (the interpreter ignores it)
    # num_stages: 1, no software pipelining. The backward kernels loop over batch rows, and the
    # pipeliner's extra buffers put them over the shared memory of any GPU (bench/kernels_aot.py shows it).
    stages: int = 1

    @property
    def n(self) -> int:
        return self.n1 * self.n2


def conv_size(seqlen: int) -> int:
    """N: the circular convolution size, ≥ 2L so that the bidirectional convolution does not wrap."""
    return max(256, _next_pow2(2 * seqlen))


def _warps(tile_elements: int) -> int:
    # Every program keeps a dozen fp32 tiles live; 8 warps halve the registers per thread of big ones.
    return 8 if tile_elements >= 2048 else 4


def plan(seqlen: int, channels: int, algorithm: str = "auto", warps: int | None = None) -> Plan:
    """The algorithm (``auto``: tiles up to N = TILE_MAX_N, passes above), DFT factors and blocks.

    ``warps`` overrides the launches' num_warps (bench/kernels.py --warps compares them)."""
    n = conv_size(seqlen)
    if n > MAX_N:
        raise ValueError(f"sequence length {seqlen} > {MAX_SEQLEN}, the longest the fused sequence-mixer kernels "
                         "support; use kernels: torch")
    if algorithm == "auto":
        algorithm = "tile" if n <= TILE_MAX_N else "passes"
    log_n = int(math.log2(n))
    bh = min(16, _next_pow2(channels))
    if algorithm == "tile":
        n1 = 1 << (log_n // 2)
        bh = min(bh, max(1, TILE_ELEMENTS // n))
        return Plan("tile", n1, n // n1, bh, warps=warps or _warps(n * bh))
    if algorithm == "passes":
        if n < PASSES_MIN_N:
            raise ValueError(f"algorithm 'passes' needs a convolution size N ≥ {PASSES_MIN_N} "
                             f"(sequence length > {PASSES_MIN_N // 4}); got L = {seqlen}")
        n1 = 1 << ((log_n + 1) // 2)  # the larger factor: passes 1 and 3 use only half of F_N1
        n2 = n // n1
        # The width of the stage GEMMs: BN2·BH = 64 in passes 1 and 3, BK1·BH = 32 in pass 2, which
        # holds the most tiles (at 64 it spills, and asks for more shared memory than an A100 has).
        bn2, bk1 = min(n2, max(1, 64 // bh)), min(n1, max(1, 32 // bh))
        return Plan("passes", n1, n2, bh, bn2, bk1, warps=warps or _warps(max(n1 * bn2, n2 * bk1) * bh))
    raise ValueError(f"algorithm={algorithm!r}; choose auto, tile or passes")


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


def _groups(batch: int, programs_per_group: int, device: torch.device, interpret: bool) -> int:
    """Batch rows are split into G groups; one program reduces the filter gradients of a group."""
    if interpret or device.type != "cuda":
        return min(batch, 2)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(batch, (2 * sms) // max(1, programs_per_group)))


class _SeqMixerConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: Plan, proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd, k2_rev, bias2):
        bsz, seqlen, h = u.shape
        mod, _ = kernel_module("seq_mixer_conv", proj.device)
        consts = _dft_constants(p.n1, p.n2, str(proj.device))
        kr, ki = _spectrum(k_fwd, k_rev, p.n)
        has_res = k2_fwd is not None
        k2r, k2i = _spectrum(k2_fwd, k2_rev, p.n) if has_res else (kr, ki)
        scw = sc_weight.reshape(-1, 3).contiguous()
        scb = sc_bias.contiguous()
        bias_c = bias.contiguous()
        bias2_c = bias2.contiguous() if has_res else bias_c
        m = mask.reshape(bsz, seqlen) if mask is not None else proj
        ms = (m.stride(0), m.stride(1)) if mask is not None else (0, 0)
        y = torch.empty(bsz, seqlen, h, device=u.device, dtype=proj.dtype)
        flags = dict(HAS_MASK=mask is not None, HAS_RES=has_res, N1=p.n1, N2=p.n2, BH=p.bh, PREC=_precision(proj))
        n_hb = triton_cdiv(h, p.bh)
        if p.algorithm == "tile":
            mod.seqmix_fwd_kernel[(n_hb, bsz)](
                proj, u, m, scw, scb, kr, ki, bias_c, k2r, k2i, bias2_c, *consts, y,
                seqlen, h, *proj.stride(), *u.stride(), *ms, *y.stride(),
                num_warps=p.warps, num_stages=p.stages, **flags)
        else:
            c1, s1, c2, s2, twr, twi = consts
            scratch = torch.empty(2 if has_res else 1, 2, bsz, p.n1, p.n2, h, device=u.device, dtype=torch.float32)
            sw, su = scratch[0], scratch[-1]
            cols = (n_hb, p.n2 // p.bn2, bsz)
            mod.long_fwd_pass1[cols](
                proj, u, m, scw, scb, c1, s1, twr, twi, sw[0], sw[1], su[0], su[1],
                seqlen, h, *proj.stride(), *u.stride(), *ms, BN2=p.bn2,
                num_warps=p.warps, num_stages=p.stages, **flags)
            mod.long_fwd_pass2[(n_hb, p.n1 // p.bk1, bsz * (2 if has_res else 1))](  # axis 2: conv, batch row
                sw[0], sw[1], su[0], su[1], kr, ki, k2r, k2i, c2, s2, twr, twi, bsz, h,
                N1=p.n1, N2=p.n2, BH=p.bh, BK1=p.bk1, PREC=flags["PREC"],
                num_warps=p.warps, num_stages=p.stages)
            mod.long_fwd_pass3[cols](
                proj, u, m, scw, scb, bias_c, bias2_c, c1, s1, sw[0], sw[1], su[0], su[1], y,
                seqlen, h, *proj.stride(), *u.stride(), *ms, *y.stride(), BN2=p.bn2,
                num_warps=p.warps, num_stages=p.stages, **flags)
        ctx.save_for_backward(proj, u, mask, scw, scb, kr, ki, bias_c, k2r, k2i, bias2_c)
        ctx.plan = p
        ctx.meta = (has_res, k_rev is not None, k2_rev is not None if has_res else False,
                    sc_weight.shape, sc_weight.dtype, k_fwd.dtype, bias.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        proj, u, mask, scw, scb, kr, ki, bias, k2r, k2i, bias2 = ctx.saved_tensors
        has_res, has_rev, has_rev2, sc_shape, sc_dtype, k_dtype, b_dtype = ctx.meta
        p: Plan = ctx.plan
        bsz, seqlen, h = u.shape
        mod, interpret = kernel_module("seq_mixer_conv", proj.device)
        consts = _dft_constants(p.n1, p.n2, str(proj.device))
        dy = dy.contiguous()
        m = mask.reshape(bsz, seqlen) if mask is not None else proj
        ms = (m.stride(0), m.stride(1)) if mask is not None else (0, 0)
        n_hb = triton_cdiv(h, p.bh)
        dev = proj.device
        ds = torch.empty(bsz, seqlen, 3 * h, device=dev, dtype=torch.float32)
        du = torch.empty(bsz, seqlen, h, device=dev, dtype=u.dtype) if has_res else ds
        flags = dict(HAS_MASK=mask is not None, N1=p.n1, N2=p.n2, BH=p.bh, PREC=_precision(proj))
        if p.algorithm == "tile":
            groups = _groups(bsz, n_hb, dev, interpret)
            dbias = torch.empty(groups, h, device=dev, dtype=torch.float32)
            gk = torch.empty(2, groups, p.n, h, device=dev, dtype=torch.float32)
            gk2 = torch.empty_like(gk) if has_res else gk
            dbias2 = torch.empty_like(dbias) if has_res else dbias
            mod.seqmix_bwd_kernel[(n_hb, groups * (2 if has_res else 1))](  # axis 1: conv, group
                proj, u, m, scw, scb, kr, ki, bias, k2r, k2i, bias2, *consts,
                dy, ds, du, gk, gk2, dbias, dbias2,
                bsz, seqlen, h, groups,
                *proj.stride(), *u.stride(), *ms, *dy.stride(), *ds.stride(), *du.stride(),
                num_warps=p.warps, num_stages=p.stages, **flags)
        else:
            c1, s1, c2, s2, twr, twi = consts
            scratch = torch.empty(4 if has_res else 2, 2, bsz, p.n1, p.n2, h, device=dev, dtype=torch.float32)
            sw, sz, su, sy = scratch[0], scratch[1], scratch[-2], scratch[-1]
            n_cols = p.n2 // p.bn2
            mod.long_bwd_pass1[(n_hb, n_cols, bsz)](
                proj, u, m, scw, scb, dy, c1, s1, twr, twi, sw[0], sw[1], sz[0], sz[1], su[0], su[1], sy[0], sy[1],
                seqlen, h, *proj.stride(), *u.stride(), *ms, *dy.stride(), HAS_RES=has_res, BN2=p.bn2,
                num_warps=p.warps, num_stages=p.stages, **flags)
            groups = _groups(bsz, n_hb * (p.n1 // p.bk1), dev, interpret)
            gk = torch.empty(2, groups, p.n, h, device=dev, dtype=torch.float32)
            gk2 = torch.empty_like(gk) if has_res else gk
            mod.long_bwd_pass2[(n_hb, p.n1 // p.bk1, groups * (2 if has_res else 1))](  # axis 2: conv, group
                sw[0], sw[1], sz[0], sz[1], su[0], su[1], sy[0], sy[1], kr, ki, k2r, k2i, c2, s2, twr, twi,
                gk[0], gk[1], gk2[0], gk2[1], bsz, h, groups,
                N1=p.n1, N2=p.n2, BH=p.bh, BK1=p.bk1, PREC=flags["PREC"],
                num_warps=p.warps, num_stages=p.stages)
            groups3 = _groups(bsz, n_hb * n_cols, dev, interpret)
            dbias = torch.empty(groups3 * n_cols, h, device=dev, dtype=torch.float32)
            dbias2 = torch.empty_like(dbias) if has_res else dbias
            mod.long_bwd_pass3[(n_hb, n_cols, groups3 * (2 if has_res else 1))](  # axis 2: conv, group
                proj, u, m, scw, scb, bias, bias2, dy, c1, s1, sw[0], sw[1], sz[0], sz[1], sy[0], sy[1],
                ds, du, dbias, dbias2, bsz, seqlen, h, groups3,
                *proj.stride(), *u.stride(), *ms, *dy.stride(), *ds.stride(), *du.stride(), BN2=p.bn2,
                num_warps=p.warps, num_stages=p.stages, **flags)
        dproj, dwp, dbp = _short_conv_backward(mod, ds, proj, m, ms, scw, mask is not None, interpret)

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
        return (None, dproj, du if has_res else None, None,
                dwp.reshape(sc_shape).to(sc_dtype), dbp.to(sc_dtype),
                d_kf, d_kr, dbias.sum(0).to(b_dtype), d_k2f, d_k2r, d_b2)


def _precision(x: torch.Tensor) -> str:
    """fp32 activations get exact fp32 dots; bf16/fp16 ones tf32 (the kernels compute in fp32 regardless)."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def _short_conv_backward(mod, ds, proj, m, ms, scw, has_mask: bool, interpret: bool):
    """d proj, d weight and d bias of the masked depthwise causal conv, given d of its output."""
    bsz, seqlen, c = proj.shape
    bc = min(64, _next_pow2(c))
    n_cb = triton_cdiv(c, bc)
    groups = _groups(bsz, n_cb, proj.device, interpret)
    dproj = torch.empty_like(proj)
    dwp = torch.empty(groups, c, 3, device=proj.device, dtype=torch.float32)
    dbp = torch.empty(groups, c, device=proj.device, dtype=torch.float32)
    mod.shortconv_bwd_kernel[(n_cb, groups)](
        ds, proj, m, scw, dproj, dwp, dbp,
        bsz, seqlen, c, groups,
        *ds.stride(), *proj.stride(), *ms, *dproj.stride(),
        HAS_MASK=has_mask, BL=64, BC=bc,
    )
    return dproj, dwp.sum(0), dbp.sum(0)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def seq_mixer_conv_triton(proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd=None, k2_rev=None,
                          bias2=None, algorithm: str = "auto", warps: int | None = None):
    """The sequence mixer between in_linear and out_linear, by the fused Triton kernels.

    proj: (B, L, 3H) output of in_linear; u: (B, L, H) layer input (after the optional norm);
    mask: (B, L, 1) with 0 at padding, or None; sc_weight (3H, 1, 3), sc_bias (3H,): the short
    conv; k_fwd, k_rev (L, H), bias (H,): the long filter (k_rev None when causal); k2_*, bias2:
    the residual filter or None. ``algorithm``: see :func:`plan`.
    """
    seqlen = u.shape[1]
    k_fwd = k_fwd[:seqlen]
    k_rev = k_rev[:seqlen] if k_rev is not None else None
    if k2_fwd is not None:
        k2_fwd = k2_fwd[:seqlen]
        k2_rev = k2_rev[:seqlen] if k2_rev is not None else None
    if mask is not None:
        mask = mask.to(proj.dtype)
    p = plan(seqlen, u.shape[-1], algorithm, warps)
    return _SeqMixerConv.apply(p, proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd, k2_rev, bias2)
