"""Block-diagonal (Monarch) GLU MLP: ``wo(GELU(gate)·value) + b`` with ``[gate, value] = blockdiag(W_in) x``.

Forward, two kernels:
1. ``glu_fwd_kernel``: the first block-diagonal matmul, gate block i and value block i + k/2
   accumulated side by side, GELU(gate)·value (and the dropout mask) in the epilogue. The
   pre-activations are written only when a backward will need them.
2. ``bd_gemm_kernel``: the second block-diagonal matmul with the bias in its epilogue.
Backward, four launches of ``bd_gemm_kernel``: d(act) = dy·blockdiag(W_out) with the GLU
backward (and dropout mask) in the epilogue, writing d(gate), d(value); dW_out; dx; dW_in.
The bias gradient is a column sum (PyTorch).

Dropout: the mask is drawn with PyTorch (``bernoulli``) and applied in the kernels' epilogues,
so it is the same distribution as ``F.dropout`` but not the same random stream.

The PyTorch reference (what the model runs with ``kernels: torch``, and what the tests compare
with) is the model's ``m2bert.model.monarch.monarch_glu``; this package depends on torch and
triton only.
"""
from __future__ import annotations

import torch

from m2bert.kernels._loader import kernel_module

BM, BN, BK = 64, 64, 32


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _dot_f32(t: torch.Tensor, interpret: bool) -> bool:
    # The interpreter's dot multiplies raw storage (bf16 is uint16 there), so it gets fp32 operands.
    return interpret or t.dtype == torch.float32


def _gemm(mod, interpret, a, a_str, b, b_str, c, c_str, nblocks, M, N, K, *, bias=None, glu=None, drop=None):
    """C_b[m, n] = Σ_k A_b[m, k]·B_b[k, n] for every block b; strides are (block, row, col)."""
    dummy = c if c is not None else glu[1]
    gv, dgv, half = glu if glu is not None else (dummy, dummy, 0)
    epilogue = 2 if glu is not None else (1 if bias is not None else 0)
    grid = (_cdiv(M, BM), _cdiv(N, BN), nblocks)
    mod.bd_gemm_kernel[grid](
        a, b, c if c is not None else dummy, bias if bias is not None else dummy, gv, dgv,
        drop if drop is not None else dummy,
        M, N, K, half, *a_str, *b_str, *(c_str if c is not None else (0, 0, 0)),
        gv.stride(0), drop.stride(0) if drop is not None else 0,
        EPILOGUE=epilogue, HAS_DROP=drop is not None, DOT_F32=_dot_f32(a, interpret), BM=BM, BN=BN, BK=BK,
    )


class _MonarchGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_in, w_out, b_out, drop_mask, need_grad=True):
        k, q, p = w_in.shape
        k_out, q_out, p_out = w_out.shape
        half_cols = (k // 2) * q  # I, the intermediate size
        mod, interpret = kernel_module("blockdiag_glu", x.device)
        x2 = x.reshape(-1, k * p).contiguous()
        M = x2.shape[0]
        dt = x2.dtype
        w_in_c, w_out_c = w_in.to(dt).contiguous(), w_out.to(dt).contiguous()
        need_grad = need_grad and any(ctx.needs_input_grad[:4])  # saves gate/value only for a backward
        act = torch.empty(M, half_cols, device=x.device, dtype=dt)
        gv = torch.empty(M, 2 * half_cols, device=x.device, dtype=dt) if need_grad else act
        grid = (_cdiv(M, BM), _cdiv(q, BN), k // 2)
        mod.glu_fwd_kernel[grid](
            x2, w_in_c, act, gv, drop_mask if drop_mask is not None else act,
            M, q, p, k // 2, half_cols,
            x2.stride(0), x2.stride(1), *w_in_c.stride(),
            act.stride(0), gv.stride(0), drop_mask.stride(0) if drop_mask is not None else 0,
            STORE_GV=need_grad, HAS_DROP=drop_mask is not None, DOT_F32=_dot_f32(x2, interpret),
            BM=BM, BN=BN, BK=BK,
        )
        y = torch.empty(M, k_out * q_out, device=x.device, dtype=dt)
        bias = b_out.to(dt).contiguous() if b_out is not None else None
        # y_j = act[:, j·p_out:] @ W_out[j]ᵀ: B_j[kk, n] = W_out[j, n, kk].
        _gemm(mod, interpret, act, (p_out * act.stride(1), act.stride(0), act.stride(1)),
              w_out_c, (w_out_c.stride(0), w_out_c.stride(2), w_out_c.stride(1)),
              y, (q_out * y.stride(1), y.stride(0), y.stride(1)), k_out, M, q_out, p_out, bias=bias)
        if need_grad:
            ctx.save_for_backward(x2, w_in_c, w_out_c, act, gv, drop_mask)
        ctx.shapes = (x.shape, b_out is not None, w_in.dtype, w_out.dtype)
        return y.reshape(*x.shape[:-1], k_out * q_out)

    @staticmethod
    def backward(ctx, dy):
        x2, w_in, w_out, act, gv, drop = ctx.saved_tensors
        x_shape, has_bias, w_in_dtype, w_out_dtype = ctx.shapes
        k, q, p = w_in.shape
        k_out, q_out, p_out = w_out.shape
        half_cols = (k // 2) * q
        mod, interpret = kernel_module("blockdiag_glu", x2.device)
        dy2 = dy.reshape(-1, k_out * q_out).to(x2.dtype).contiguous()
        M = dy2.shape[0]
        # d(act)_j = dy_j @ W_out[j]; the epilogue turns it into d(gate), d(value).
        dgv = torch.empty_like(gv)
        _gemm(mod, interpret, dy2, (q_out * dy2.stride(1), dy2.stride(0), dy2.stride(1)),
              w_out, (w_out.stride(0), w_out.stride(1), w_out.stride(2)),
              None, None, k_out, M, p_out, q_out, glu=(gv, dgv, half_cols), drop=drop)
        # dW_out[j] = dy_jᵀ @ act_j (tokens are the reduction axis).
        dw_out = torch.empty(w_out.shape, device=dy.device, dtype=torch.float32)
        _gemm(mod, interpret, dy2, (q_out * dy2.stride(1), dy2.stride(1), dy2.stride(0)),
              act, (p_out * act.stride(1), act.stride(0), act.stride(1)),
              dw_out, dw_out.stride(), k_out, q_out, p_out, M)
        # dx_b = dgv_b @ W_in[b]; dW_in[b] = dgv_bᵀ @ x_b.
        dx = torch.empty_like(x2)
        _gemm(mod, interpret, dgv, (q * dgv.stride(1), dgv.stride(0), dgv.stride(1)),
              w_in, (w_in.stride(0), w_in.stride(1), w_in.stride(2)),
              dx, (p * dx.stride(1), dx.stride(0), dx.stride(1)), k, M, p, q)
        dw_in = torch.empty(w_in.shape, device=dy.device, dtype=torch.float32)
        _gemm(mod, interpret, dgv, (q * dgv.stride(1), dgv.stride(1), dgv.stride(0)),
              x2, (p * x2.stride(1), x2.stride(0), x2.stride(1)),
              dw_in, dw_in.stride(), k, q, p, M)
        db = dy2.float().sum(0) if has_bias else None
        return (dx.reshape(x_shape), dw_in.to(w_in_dtype), dw_out.to(w_out_dtype),
                None if db is None else db.to(w_out_dtype), None, None)


def monarch_glu_triton(x, w_in, w_out, b_out, dropout: float = 0.0, training: bool = False):
    """``wo(GELU(gate)·value) + b_out`` with ``[gate, value] = blockdiag(w_in) x``, by the fused Triton kernels.

    x: (..., H); w_in: (k, 2I/k, H/k) and w_out: (k, H/k, I/k), the blocks of the two
    block-diagonal matrices; b_out: (H,) or None; dropout on GELU(gate)·value when ``training``.
    """
    k, q, p = w_in.shape
    k_out, q_out, p_out = w_out.shape
    if k % 2 or q % p_out or (k // 2) * q != k_out * p_out:
        raise ValueError(f"monarch_glu: blocks {tuple(w_in.shape)} and {tuple(w_out.shape)} do not pair up")
    drop_mask = None
    if training and dropout > 0.0:
        keep = 1.0 - dropout
        shape = (x.numel() // (k * p), (k // 2) * q)
        drop_mask = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(keep).div_(keep)
    return _MonarchGLU.apply(x, w_in, w_out, b_out, drop_mask, torch.is_grad_enabled())
