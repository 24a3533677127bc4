"""The model's switch between the PyTorch layers and the fused Triton kernels.

``config.kernels``: ``torch`` always uses PyTorch; ``auto`` uses Triton on CUDA tensors and
PyTorch elsewhere; ``triton`` always uses Triton, which on a machine without a GPU is only
possible with the Triton interpreter (``TRITON_INTERPRET=1``, slow: for tests) and otherwise
raises a clear error. Nothing here imports Triton; the kernels are loaded on first use.
"""
from __future__ import annotations

import importlib.util
import logging

import torch

from m2bert.kernels._loader import NEEDS_GPU, interpreting

CHOICES = ("auto", "triton", "torch")
# The longest input of the fused sequence-mixer kernels (seq_mixer_conv.py sizes its plans from it;
# it lives here so that this module imports nothing heavy); longer inputs take the PyTorch path.
SEQ_MIXER_MAX_SEQLEN = 8192

log = logging.getLogger(__name__)
_warned: set[int] = set()


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(config_kernels: str, device: torch.device | str) -> bool:
    """Whether a layer whose tensors are on ``device`` should run the Triton kernels."""
    if config_kernels == "torch":
        return False
    device = torch.device(device)
    if config_kernels == "auto":
        return device.type == "cuda" and triton_available()
    if config_kernels == "triton":
        if not triton_available():
            raise RuntimeError("kernels: triton asked for, but the triton package is not installed")
        if device.type != "cuda" and not interpreting():
            raise RuntimeError(f"{NEEDS_GPU}; tensors are on {device}. Use kernels: auto or torch here.")
        return True
    raise ValueError(f"kernels={config_kernels!r}; choose one of {CHOICES}")


def seq_mixer_fits(seqlen: int) -> bool:
    """Whether the fused sequence-mixer kernels take this length; logs once per length when not."""
    if seqlen <= SEQ_MIXER_MAX_SEQLEN:
        return True
    if seqlen not in _warned:
        _warned.add(seqlen)
        log.warning("sequence length %d > %d: the sequence mixer runs in PyTorch at this length (its fused "
                    "kernels stop at %d)", seqlen, SEQ_MIXER_MAX_SEQLEN, SEQ_MIXER_MAX_SEQLEN)
    return False


def seq_mixer_conv(proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd=None, k2_rev=None, bias2=None):
    """Fused sequence-mixer convolution (see :mod:`m2bert.kernels.seq_mixer_conv`)."""
    from m2bert.kernels.seq_mixer_conv import seq_mixer_conv_triton

    return seq_mixer_conv_triton(proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd, k2_rev, bias2)


def monarch_glu(x, w_in, w_out, b_out, dropout: float = 0.0, training: bool = False):
    """Fused block-diagonal GLU MLP (see :mod:`m2bert.kernels.blockdiag_glu`)."""
    from m2bert.kernels.blockdiag_glu import monarch_glu_triton

    return monarch_glu_triton(x, w_in, w_out, b_out, dropout, training)
