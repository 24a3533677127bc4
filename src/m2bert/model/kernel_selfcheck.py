"""The fused kernels' self-check: each kernel once against the model's PyTorch path, on a small input.

The kernels have been compiled for GPUs (bench/kernels_aot.py) and tested under the Triton interpreter,
but a GPU's compiler or driver can still miscompile or refuse them. So on the first CUDA use in a
process, :mod:`m2bert.model.kernel_switch` runs :func:`check` for the kernel about to be used:
forward and the gradients of every input, in fp32 (where a wrong result stands out) and bf16
(the precision GPU training runs in), against the PyTorch reference computed in fp64 on the same
inputs. Milliseconds on a GPU; the inputs cover both sequence-mixer plans (tiles and passes).
"""
from __future__ import annotations

from typing import Callable

import torch

from m2bert.kernels.blockdiag_glu import monarch_glu_triton
from m2bert.kernels.seq_mixer_conv import seq_mixer_conv_triton
from m2bert.model.monarch import monarch_glu
from m2bert.model.seq_mixer_conv import seq_mixer_conv_reference

KERNELS = ("seq_mixer_conv", "monarch_glu")

# Relative to the output scale (max |reference|), as tests/kernels uses them: the kernels compute in
# fp32, and bf16 inputs round once on output (eps 7.8e-3); a wrong kernel is off by far more.
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 3e-2}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| relative to the output scale max |b| (the tests' measure too)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _compare(name: str, fused: Callable, reference: Callable, inputs: list[torch.Tensor | None],
             dtype: torch.dtype, constant: tuple[int, ...] = ()) -> str | None:
    """None when ``fused`` matches ``reference`` (forward and the gradients of the inputs not in
    ``constant``), else what differs."""
    g = torch.Generator().manual_seed(0)
    args = [None if t is None else t.to(dtype).detach().requires_grad_(i not in constant) for i, t in enumerate(inputs)]
    out = fused(*args)
    dy = torch.randn(out.shape, generator=g).to(out.device)
    grads = torch.autograd.grad(out, [a for a in args if a is not None and a.requires_grad], dy.to(out.dtype),
                                allow_unused=True)
    ref_args = [None if a is None else a.detach().double().requires_grad_(a.requires_grad) for a in args]
    ref = reference(*ref_args)
    ref_grads = torch.autograd.grad(ref, [a for a in ref_args if a is not None and a.requires_grad], dy.double(),
                                    allow_unused=True)
    tol = TOLERANCE[dtype]
    named = [("output", out, ref)] + [(f"grad {i}", a, b) for i, (a, b) in enumerate(zip(grads, ref_grads))]
    for what, a, b in named:
        if (a is None) != (b is None):
            return f"{name}: {what} missing ({str(dtype).replace('torch.', '')})"
        if a is None:
            continue
        if a.shape != b.shape:
            return f"{name}: {what} has shape {tuple(a.shape)}, expected {tuple(b.shape)}"
        err = rel_err(a, b)
        if not err <= tol:  # also catches NaN
            return f"{name}: {what} off by {err:.1e} relative (tolerance {tol:g}, {str(dtype).replace('torch.', '')})"
    return None


def _seq_mixer_inputs(seqlen: int, device: torch.device) -> list[torch.Tensor | None]:
    g = torch.Generator().manual_seed(1)
    b, h = 2, 32

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=g)).to(device)

    mask = torch.ones(b, seqlen, 1)
    mask[0, seqlen - seqlen // 4:] = 0
    decay = torch.exp(-torch.arange(seqlen, dtype=torch.float32) / 8)[:, None]
    return [r(b, seqlen, 3 * h), r(b, seqlen, h), mask.to(device), r(3 * h, 1, 3, scale=0.5), r(3 * h, scale=0.1),
            r(seqlen, h) * decay.to(device), r(seqlen, h) * decay.to(device), r(h),
            r(seqlen, h) * decay.to(device), r(seqlen, h) * decay.to(device), r(h)]


def _glu_inputs(device: torch.device) -> list[torch.Tensor | None]:
    g = torch.Generator().manual_seed(2)
    k, p, q = 4, 16, 32  # H = 64, I = 64: blocks (4, 32, 16) in, (4, 16, 16) out
    return [torch.randn(2, 24, k * p, generator=g).to(device), (torch.randn(k, q, p, generator=g) / 4).to(device),
            (torch.randn(k, 16, 16, generator=g) / 4).to(device), torch.randn(k * 16, generator=g).to(device)]


# The sequence-mixer check's lengths: one per plan (tiles at L ≤ 128, the three passes above).
SEQ_MIXER_LENGTHS = (40, 160)


def check(kernel: str, device: torch.device | str, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16),
          fused: Callable | None = None) -> str | None:
    """Run one fused kernel (``seq_mixer_conv`` or ``monarch_glu``) on ``device`` against PyTorch.

    Returns None when it matches, else one line saying what failed (a mismatch or the launch's
    exception). ``fused`` defaults to the kernel's entry in :mod:`m2bert.kernels`.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose seq_mixer_conv or monarch_glu")
    device = torch.device(device)
    try:
        for dtype in dtypes:
            if kernel == "seq_mixer_conv":
                fn = fused or seq_mixer_conv_triton
                for seqlen in SEQ_MIXER_LENGTHS:
                    problem = _compare(f"{kernel} (L={seqlen})", fn, seq_mixer_conv_reference,
                                       _seq_mixer_inputs(seqlen, device), dtype, constant=(2,))  # the mask
                    if problem:
                        return problem
            else:
                problem = _compare(kernel, fused or monarch_glu_triton, monarch_glu,
                                   _glu_inputs(device), dtype)
                if problem:
                    return problem
    except Exception as e:  # a launch or compile error: the kernel is unusable here
        return f"{kernel}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None
