"""The M2 sequence mixer: a gated, bidirectional long convolution in place of attention."""
from __future__ import annotations

import torch
import torch.nn as nn

from m2bert.config import M2BertConfig
from m2bert.kernels import dispatch as kernels
from m2bert.model.implicit_filter import ImplicitFilter
from m2bert.model.long_conv import apply_long_conv


class _CausalShortConv(torch.autograd.Function):
    """Depthwise causal conv with kernel 3 on (B, L, C), forward and backward by hand.

    Autograd through the in-place shifted updates would materialise full-size zero
    tensors for every shifted slice; the explicit backward is a handful of passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
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
            c = x.shape[-1]
            gw = torch.stack([
                (gy[:, 2:] * x[:, :-2]).reshape(-1, c).sum(0),
                (gy[:, 1:] * x[:, :-1]).reshape(-1, c).sum(0),
                (gy * x).reshape(-1, c).sum(0),
            ], dim=-1)
        if ctx.needs_input_grad[2]:
            gb = gy.reshape(-1, gy.shape[-1]).sum(0)
        return gx, gw, gb


def causal_short_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv, kernel 3, on (B, L, C): y[t] = w0·x[t−2] + w1·x[t−1] + w2·x[t] + b.

    Same result as the original's ``Conv1d(padding=2)[..., :L]`` (weight (C, 1, 3)) but in
    the (B, L, C) layout the rest of the layer uses, so no transposes are needed.
    """
    w = weight[:, 0, :]
    return _CausalShortConv.apply(x, w, bias)


class MonarchSequenceMixer(nn.Module):
    """in_linear → short conv → v·x1 → long conv (+ skip) → ·x2 (+ residual long conv of u) → out_linear."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.hidden_size = h
        self.impl = config.long_conv_impl
        self.kernels = config.kernels
        self.norm = nn.LayerNorm(h) if config.hyena_training_additions else None
        self.in_linear = nn.Linear(h, 3 * h)
        self.out_linear = nn.Linear(h, h)
        self.short_conv = nn.Conv1d(3 * h, 3 * h, kernel_size=3, groups=3 * h, padding=2)
        filter_args = dict(
            channels=h,
            seq_len=config.long_conv_l_max,
            emb_dim=config.hyena_emb_dim,
            order=config.hyena_filter_order,
            w=config.hyena_w,
            w_mod=config.hyena_w_mod,
            bidirectional=config.bidirectional,
        )
        self.long_conv = ImplicitFilter(**filter_args)
        self.residual_long_conv = ImplicitFilter(**filter_args) if config.residual_long_conv else None

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """u: (B, L, H); mask: (B, L, 1) with 0 at padding, or None to mix every position.

        With a mask, every convolution input is zeroed at padded positions, so padding
        never leaks into real tokens (the original lets it, see ``padding_invariant``).
        """
        if self.norm is not None:
            u = self.norm(u)
        seqlen = u.shape[1]
        proj = self.in_linear(u)
        # Fused short conv, gates and long convs (kernels/), up to the kernels' longest length.
        if kernels.use_triton(self.kernels, proj.device, "seq_mixer_conv") and kernels.seq_mixer_fits(seqlen):
            k_fwd, k_rev = self.long_conv(seqlen)
            res = self.residual_long_conv
            k2_fwd, k2_rev = res(seqlen) if res is not None else (None, None)
            y = kernels.seq_mixer_conv(proj, u, mask, self.short_conv.weight, self.short_conv.bias, k_fwd, k_rev,
                                       self.long_conv.bias, k2_fwd, k2_rev, res.bias if res is not None else None)
            return self.out_linear(y)
        if mask is not None:
            proj.mul_(mask)
        proj = causal_short_conv(proj, self.short_conv.weight, self.short_conv.bias)
        x1, x2, v = proj.split(self.hidden_size, dim=-1)
        v = v * x1
        if mask is not None:
            v = v.mul_(mask)
        y = apply_long_conv(v, self.long_conv.spectrum(seqlen, self.impl), self.long_conv.bias, self.impl)
        if self.residual_long_conv is None:
            return self.out_linear(y * x2)
        res = self.residual_long_conv
        u_in = u * mask if mask is not None else u
        residual = apply_long_conv(u_in, res.spectrum(seqlen, self.impl), res.bias, self.impl)
        return self.out_linear(torch.addcmul(residual, y, x2))  # residual + y·x2 in one pass
