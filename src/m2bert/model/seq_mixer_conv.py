"""The sequence mixer's convolution part, in PyTorch: everything between ``in_linear`` and ``out_linear``.

mask → depthwise causal short conv (kernel 3) → v·x1 (masked) → bidirectional long conv (+ skip)
→ ·x2 (+ the residual long conv of the masked u). Written once: :class:`MonarchSequenceMixer`
runs it with ``kernels: torch`` (and wherever the Triton kernels do not run), and it is the
reference the fused kernels (``m2bert.kernels.seq_mixer_conv``) are tested and self-checked
against. It lives apart from the layer so that the kernel switch and its self-check, which the
layer imports, can import it without an import cycle.
"""
from __future__ import annotations

import torch

from m2bert.model.long_conv import apply_long_conv, conv_spectrum


class _CausalShortConv(torch.autograd.Function):
    """Depthwise causal conv with kernel 3 on (B, L, C), forward and backward by hand.

    Autograd through the in-place shifted updates would materialise full-size zero
    tensors for every shifted slice; the explicit backward is a handful of passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # In x's dtype, as autocast runs the original's Conv1d: fp32 weights against a bf16 x would widen every
        # product (and convert x once per tap); the gradients return in the parameters' dtypes.
        ctx.dtypes = (w.dtype, bias.dtype)
        w, bias = w.to(x.dtype), bias.to(x.dtype)
        ctx.save_for_backward(x, w)
        y = torch.addcmul(bias, x, w[:, 2])
        y[:, 1:].addcmul_(x[:, :-1], w[:, 1])
        y[:, 2:].addcmul_(x[:, :-2], w[:, 0])
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = gy * w[:, 2]
            gx[:, :-1].addcmul_(gy[:, 1:], w[:, 1])
            gx[:, :-2].addcmul_(gy[:, 2:], w[:, 0])
        if ctx.needs_input_grad[1]:
            c, acc = x.shape[-1], torch.promote_types(x.dtype, torch.float32)  # sums at least in fp32
            gw = torch.stack([
                (gy[:, 2:] * x[:, :-2]).reshape(-1, c).sum(0, dtype=acc),
                (gy[:, 1:] * x[:, :-1]).reshape(-1, c).sum(0, dtype=acc),
                (gy * x).reshape(-1, c).sum(0, dtype=acc),
            ], dim=-1).to(ctx.dtypes[0])
        if ctx.needs_input_grad[2]:
            gb = gy.reshape(-1, gy.shape[-1]).sum(0, dtype=torch.promote_types(gy.dtype, torch.float32))
            gb = gb.to(ctx.dtypes[1])
        return gx, gw, gb


def causal_short_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv, kernel 3, on (B, L, C): y[t] = w0·x[t−2] + w1·x[t−1] + w2·x[t] + b.

    Same result as the original's ``Conv1d(padding=2)[..., :L]`` (weight (C, 1, 3)) but in
    the (B, L, C) layout the rest of the layer uses, so no transposes are needed.
    """
    w = weight[:, 0, :]
    return _CausalShortConv.apply(x, w, bias)


def gated_long_conv(
    proj: torch.Tensor,
    u: torch.Tensor,
    mask: torch.Tensor | None,
    sc_weight: torch.Tensor,
    sc_bias: torch.Tensor,
    spectrum: torch.Tensor,
    bias: torch.Tensor,
    spectrum2: torch.Tensor | None = None,
    bias2: torch.Tensor | None = None,
    impl: str = "fft",
    inplace: bool = False,
) -> torch.Tensor:
    """The sequence mixer between in_linear and out_linear, with the long filters as spectra.

    proj: (B, L, 3H) output of in_linear; u: (B, L, H) layer input (after the optional norm);
    mask: (B, L, 1) with 0 at padding, or None; sc_weight (3H, 1, 3), sc_bias (3H,): the short
    conv; spectrum, bias (H,): the long filter in the form ``impl`` applies it
    (:func:`m2bert.model.long_conv.conv_spectrum`); spectrum2, bias2: the residual filter or None.
    ``inplace`` lets it overwrite ``proj`` (the layer's fresh in_linear output; saves a copy).
    """
    if mask is not None:
        proj = proj.mul_(mask) if inplace else proj * mask
    proj = causal_short_conv(proj, sc_weight, sc_bias)
    x1, x2, v = proj.split(u.shape[-1], dim=-1)
    v = v * x1
    if mask is not None:
        v = v.mul_(mask)
    y = apply_long_conv(v, spectrum, bias, impl)
    if spectrum2 is None:
        return y * x2
    u_in = u * mask if mask is not None else u
    residual = apply_long_conv(u_in, spectrum2, bias2, impl)
    return torch.addcmul(residual, y, x2)  # residual + y·x2 in one pass


def seq_mixer_conv_reference(proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd=None, k2_rev=None,
                             bias2=None, impl: str = "fft") -> torch.Tensor:
    """:func:`gated_long_conv` with the fused kernels' arguments: the filters (L, H) instead of spectra.

    k_fwd, k_rev (L, H): the long filter (k_rev None when causal); k2_fwd, k2_rev, bias2: the
    residual filter or None. The contract of ``m2bert.kernels.seq_mixer_conv.seq_mixer_conv_triton``.
    """
    seqlen = u.shape[1]
    spectrum2 = conv_spectrum(k2_fwd, k2_rev, seqlen, impl) if k2_fwd is not None else None
    return gated_long_conv(proj, u, mask, sc_weight, sc_bias, conv_spectrum(k_fwd, k_rev, seqlen, impl), bias,
                           spectrum2, bias2, impl)
