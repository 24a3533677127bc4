"""The implicit (Hyena-style) long-convolution filter.

A long filter of length L per channel is not stored: a small MLP with sine activations
generates it from positional features, and an exponential decay window shapes it. The
parameter count is therefore independent of the sequence length, and a model trained at
one length can be run at another up to ``long_conv_l_max``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from m2bert.model.long_conv import conv_spectrum


def positional_features(seq_len: int, emb_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features z (L, emb_dim) = [t, cos bands, -sin bands] and normalised time t (L, 1).

    Always fp32, whatever the default dtype: transformers builds a model loaded with
    ``dtype=torch.float16`` under that default, and complex half has no ``exp`` (nor the precision).
    """
    t = torch.linspace(0, 1, seq_len, dtype=torch.float32)[:, None]
    bands = (emb_dim - 1) // 2
    w = 2 * math.pi * torch.linspace(0, seq_len - 1, seq_len, dtype=torch.float32)[:, None] / seq_len
    z = torch.exp(-1j * torch.linspace(1e-4, bands - 1, bands, dtype=torch.float32)[None, :] * w)
    return torch.cat([t, z.real, z.imag], dim=-1), t


def decay_rates(channels: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5, target: float = 1e-2) -> torch.Tensor:
    """Per-channel decay rates, from slow (long memory) to fast (local) channels."""
    max_decay = math.log(target) / fast_decay_pct
    min_decay = math.log(target) / slow_decay_pct
    return torch.linspace(min_decay, max_decay, channels, dtype=torch.float32)


class ImplicitFilter(nn.Module):
    """Generates the forward (and, if bidirectional, reverse) long filters plus a skip weight.

    One sine frequency vector ``freq`` is shared by every activation of both MLPs, exactly as
    in the original implementation (its Sin module is one object reused). ``t`` and
    ``deltas`` are fixed buffers; ``z`` is trained with its own small learning rate.
    """

    def __init__(
        self,
        channels: int,
        seq_len: int,
        emb_dim: int = 5,
        order: int = 128,
        w: float = 10.0,
        w_mod: float = 1.0,
        bidirectional: bool = True,
        num_inner_mlps: int = 2,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.channels, self.seq_len, self.w_mod = channels, seq_len, w_mod
        self.init_scale = init_scale  # read by M2BertPreTrainedModel._init_weights
        # Shapes (1, L, E), (1, L, 1), (1, 1, H), (1, order) as in the original's state dict.
        z, t = positional_features(seq_len, emb_dim)
        self.z = nn.Parameter(z[None])
        self.register_buffer("t", t[None])
        self.register_buffer("deltas", decay_rates(channels)[None, None])
        self.freq = nn.Parameter(w * torch.ones(1, order))
        self.bias = nn.Parameter(torch.randn(channels))
        self.mlp_fwd = self._mlp(emb_dim, order, channels, num_inner_mlps)
        self.mlp_rev = self._mlp(emb_dim, order, channels, num_inner_mlps) if bidirectional else None
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @staticmethod
    def _mlp(emb_dim: int, order: int, channels: int, num_inner: int) -> nn.ModuleList:
        sizes = [emb_dim] + [order] * (num_inner + 1)
        layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        return nn.ModuleList(layers + [nn.Linear(order, channels, bias=False)])

    def _generate(self, mlp: nn.ModuleList, seq_len: int) -> torch.Tensor:
        # The features and the decay window are fp32 (a model loaded with ``dtype=`` keeps
        # them so); the MLP runs in its weights' dtype and the window is cast where it is used.
        dtype = mlp[0].weight.dtype
        h = self.z[0, :seq_len].to(dtype)
        for linear in mlp[:-1]:
            h = torch.sin(self.w_mod * self.freq.to(dtype) * linear(h))
        h = mlp[-1](h)
        window = torch.exp(-self.t[0, :seq_len].float() * self.deltas[0].abs().float())
        return h * window.to(dtype)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Filters (L, H) for the first ``seq_len`` positions: (k_fwd, k_rev or None)."""
        if seq_len > self.seq_len:
            raise ValueError(
                f"input length {seq_len} exceeds long_conv_l_max={self.seq_len}; "
                "build the model with a longer long_conv_l_max"
            )
        k_rev = self._generate(self.mlp_rev, seq_len) if self.mlp_rev is not None else None
        return self._generate(self.mlp_fwd, seq_len), k_rev

    @torch.no_grad()
    def tail_energy(self, min_lag: int = 3) -> float:
        """Σ k² over lags |lag| ≥ ``min_lag`` (both directions, all channels): what the filters mix from beyond the
        3-tap short convolution's reach (lags 0..2). Near 0, the long convolution has collapsed to a local one."""
        k_fwd, k_rev = self(self.seq_len)
        energy = k_fwd[min_lag:].float().pow(2).sum()
        if k_rev is not None:  # k_rev[m - 1] is the tap at lag -m
            energy = energy + k_rev[min_lag - 1:].float().pow(2).sum()
        return float(energy)

    def spectrum(self, seq_len: int, impl: str) -> torch.Tensor:
        """The filters as the long convolution applies them (see ``long_conv.conv_spectrum``).

        When no gradient is needed (inference, eager), the result depends on the weights alone, so
        it is cached until a weight changes (tracked by the parameters' version counters).
        """
        # Under torch.compile the cache key (version counters) would be a data-dependent guard and
        # break the graph; there the spectrum is recomputed, fused with the rest of the graph.
        if torch.compiler.is_compiling() or (
                torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
            return conv_spectrum(*self(seq_len), seq_len, impl)
        key = (seq_len, impl, self.z.device, self.z.dtype, tuple(p._version for p in self.parameters()))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, conv_spectrum(*self(seq_len), seq_len, impl))
        return self._cache[1]
