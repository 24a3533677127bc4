"""The M2 sequence mixer: a gated, bidirectional long convolution in place of attention."""
from __future__ import annotations

import torch
import torch.nn as nn

from m2bert.config import M2BertConfig
from m2bert.model import kernel_switch
from m2bert.model.implicit_filter import ImplicitFilter
from m2bert.model.long_conv import resolve_impl
from m2bert.model.seq_mixer_conv import gated_long_conv


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
        self.long_conv = ImplicitFilter(**filter_args, init_scale=config.long_conv_init_scale)
        self.residual_long_conv = (ImplicitFilter(**filter_args, init_scale=config.residual_long_conv_init_scale)
                                   if config.residual_long_conv else None)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """u: (B, L, H); mask: (B, L, 1) with 0 at padding, or None to mix every position.

        With a mask, every convolution input is zeroed at padded positions, so padding
        never leaks into real tokens (the original lets it, see ``padding_invariant``).
        """
        if self.norm is not None:
            u = self.norm(u)
        seqlen = u.shape[1]
        proj = self.in_linear(u)
        res = self.residual_long_conv
        # Fused short conv, gates and long convs (kernels/), up to the kernels' longest length.
        if kernel_switch.use_triton(self.kernels, proj.device, "seq_mixer_conv") and kernel_switch.seq_mixer_fits(seqlen):
            k_fwd, k_rev = self.long_conv(seqlen)
            k2_fwd, k2_rev = res(seqlen) if res is not None else (None, None)
            y = kernel_switch.seq_mixer_conv(proj, u, mask, self.short_conv.weight, self.short_conv.bias, k_fwd, k_rev,
                                             self.long_conv.bias, k2_fwd, k2_rev, res.bias if res is not None else None)
            return self.out_linear(y)
        impl = resolve_impl(self.impl, seqlen, proj.device)  # once per length: the spectra are in its form
        y = gated_long_conv(proj, u, mask, self.short_conv.weight, self.short_conv.bias,
                            self.long_conv.spectrum(seqlen, impl), self.long_conv.bias,
                            res.spectrum(seqlen, impl) if res is not None else None,
                            res.bias if res is not None else None, impl, inplace=True)
        return self.out_linear(y)
