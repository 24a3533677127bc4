"""The model's switch between its PyTorch layers and the fused Triton kernels (``m2bert.kernels``).

``config.kernels``: ``torch`` always uses PyTorch; ``auto`` uses Triton on CUDA tensors and
PyTorch elsewhere; ``triton`` always uses Triton, which on a machine without a GPU is only
possible with the Triton interpreter (``TRITON_INTERPRET=1``, slow: for tests) and otherwise
raises a clear error. Nothing here imports Triton; the kernels are loaded on first use.

Safety net: the first time a layer would run a fused kernel on a GPU in a process, that kernel is
checked once against the PyTorch path (:mod:`m2bert.model.kernel_selfcheck`, milliseconds). With
``auto`` a failure logs one warning and the layer uses PyTorch for the rest of the run; with
``triton`` it raises. Nothing is checked (nor costs anything) where the kernels do not run.
"""
from __future__ import annotations

import importlib.util
import logging

import torch

from m2bert.config import KERNEL_CHOICES
from m2bert.kernels._loader import NEEDS_GPU, interpreting
from m2bert.kernels.blockdiag_glu import monarch_glu_triton
from m2bert.kernels.seq_mixer_conv import MAX_SEQLEN as SEQ_MIXER_MAX_SEQLEN
from m2bert.kernels.seq_mixer_conv import seq_mixer_conv_triton
from m2bert.model import kernel_selfcheck

# The device types whose tensors ``auto`` sends to the kernels and whose first use runs the self-check
# (tests add "cpu" under the Triton interpreter to exercise both outcomes without a GPU).
KERNEL_DEVICE_TYPES: tuple[str, ...] = ("cuda",)
KERNELS = kernel_selfcheck.KERNELS

log = logging.getLogger(__name__)
_warned: set[int] = set()
_verdicts: dict[tuple[str, str], str | None] = {}  # (kernel, device) → None (passed) or what failed


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(config_kernels: str, device: torch.device | str, kernel: str | None = None) -> bool:
    """Whether a layer whose tensors are on ``device`` should run the Triton kernels.

    With ``kernel`` (a name in :data:`KERNELS`), its self-check runs on the first use on a device
    type of :data:`KERNEL_DEVICE_TYPES`: ``auto`` then falls back to PyTorch, ``triton`` raises.
    """
    if config_kernels == "torch":
        return False
    device = torch.device(device)
    if config_kernels == "auto":
        if device.type not in KERNEL_DEVICE_TYPES or not triton_available():
            return False
        return kernel is None or kernel_ok(kernel, device, strict=False)
    if config_kernels == "triton":
        if not triton_available():
            raise RuntimeError("kernels: triton asked for, but the triton package is not installed")
        if device.type != "cuda" and not interpreting():
            raise RuntimeError(f"{NEEDS_GPU}; tensors are on {device}. Use kernels: auto or torch here.")
        if kernel is not None and device.type in KERNEL_DEVICE_TYPES:
            kernel_ok(kernel, device, strict=True)
        return True
    raise ValueError(f"kernels={config_kernels!r}; choose one of {KERNEL_CHOICES}")


@torch.compiler.disable
def kernel_ok(kernel: str, device: torch.device, strict: bool) -> bool:
    """The kernel's self-check verdict on ``device`` (run once per process and device).

    On a failure: ``strict`` (kernels: triton) raises; otherwise one warning, and False from then on.
    """
    key = (kernel, str(device))
    if key not in _verdicts:
        fused = seq_mixer_conv if kernel == "seq_mixer_conv" else monarch_glu  # what the layers will call
        with torch.enable_grad():  # the check differentiates, even when the model runs in inference
            _verdicts[key] = problem = kernel_selfcheck.check(kernel, device, fused=fused)
        if problem is None:
            log.info("fused kernel %s passed its self-check on %s", kernel, device)
        elif not strict:
            log.warning("fused Triton kernel failed its self-check on %s (%s); that layer runs in PyTorch for the "
                        "rest of this run (same results, slower). kernels: torch skips the kernels and this check.",
                        device, problem)
    problem = _verdicts[key]
    if problem is not None and strict:
        raise RuntimeError(f"kernels: triton, but the fused kernel failed its self-check on {device} ({problem}); "
                           "use kernels: auto (falls back to PyTorch) or torch")
    return problem is None


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
    return seq_mixer_conv_triton(proj, u, mask, sc_weight, sc_bias, k_fwd, k_rev, bias, k2_fwd, k2_rev, bias2)


def monarch_glu(x, w_in, w_out, b_out, dropout: float = 0.0, training: bool = False):
    """Fused block-diagonal GLU MLP (see :mod:`m2bert.kernels.blockdiag_glu`)."""
    return monarch_glu_triton(x, w_in, w_out, b_out, dropout, training)
