"""Triton kernels of the block-diagonal (Monarch) GLU MLP. Loaded by :mod:`._loader`, never imported directly.

The module is executed once per mode (compiled or ``TRITON_INTERPRET=1``) under its own name,
because Triton decides between the two when ``@triton.jit`` runs (triton 3.3).

Two kernels:
- ``bd_gemm_kernel``: a batched strided GEMM ``C_b = A_b @ B_b`` over the diagonal blocks b,
  every operand addressed by (block, row, column) strides, so the same kernel does the
  forward of a block-diagonal linear (with the bias in its epilogue), the backward of its
  input (W instead of Wᵀ) and its weight gradient (Aᵀ: tokens become the reduction axis).
  Epilogue ``EPILOGUE=2`` is the GLU backward: the GEMM's output is d(act) and the
  epilogue writes d(gate) and d(value) from the saved pre-activations.
- ``glu_fwd_kernel``: the first matmul of the MLP with GELU(gate)·value in its epilogue; gate
  block i and value block i + k/2 are accumulated side by side from their own column slices
  of x, so the (tokens, 2I) product never reaches memory unless it is needed for backward.
"""
import triton
import triton.language as tl

_SQRT1_2 = tl.constexpr(0.7071067811865476)  # globals in @jit code must be constexpr
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _gelu(x):
    return 0.5 * x * (1.0 + tl.math.erf(x * _SQRT1_2))


@triton.jit
def _gelu_grad(x):
    cdf = 0.5 * (1.0 + tl.math.erf(x * _SQRT1_2))
    return cdf + x * tl.exp(-0.5 * x * x) * _INV_SQRT_2PI


@triton.jit
def bd_gemm_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, gv_ptr, dgv_ptr, drop_ptr,
    M, N, K, half_cols,
    s_ab, s_am, s_ak,
    s_bb, s_bk, s_bn,
    s_cb, s_cm, s_cn,
    s_gvm, s_dropm,
    EPILOGUE: tl.constexpr,  # 0: store C; 1: C + bias; 2: GLU backward into dgv
    HAS_DROP: tl.constexpr,
    DOT_F32: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    blk = tl.program_id(2)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    a_base = a_ptr + blk * s_ab + offs_m[:, None] * s_am
    b_base = b_ptr + blk * s_bb + offs_n[None, :] * s_bn
    mask_m = offs_m[:, None] < M
    mask_n = offs_n[None, :] < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + offs_k
        a = tl.load(a_base + kk[None, :] * s_ak, mask=mask_m & (kk[None, :] < K), other=0.0)
        b = tl.load(b_base + kk[:, None] * s_bk, mask=(kk[:, None] < K) & mask_n, other=0.0)
        if DOT_F32:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
    mask = mask_m & mask_n
    if EPILOGUE == 2:
        # acc = d(act) for act columns blk*N + n; gate at gv[:, col], value at gv[:, half_cols + col].
        col = blk * N + offs_n[None, :]
        if HAS_DROP:
            acc = acc * tl.load(drop_ptr + offs_m[:, None] * s_dropm + col, mask=mask, other=0.0).to(tl.float32)
        g_ptr = gv_ptr + offs_m[:, None] * s_gvm + col
        gate = tl.load(g_ptr, mask=mask, other=0.0).to(tl.float32)
        value = tl.load(g_ptr + half_cols, mask=mask, other=0.0).to(tl.float32)
        d_gate = acc * value * _gelu_grad(gate)
        d_value = acc * _gelu(gate)
        d_ptr = dgv_ptr + offs_m[:, None] * s_gvm + col
        tl.store(d_ptr, d_gate.to(dgv_ptr.dtype.element_ty), mask=mask)
        tl.store(d_ptr + half_cols, d_value.to(dgv_ptr.dtype.element_ty), mask=mask)
    else:
        if EPILOGUE == 1:
            acc += tl.load(bias_ptr + blk * N + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        c_ptrs = c_ptr + blk * s_cb + offs_m[:, None] * s_cm + offs_n[None, :] * s_cn
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def glu_fwd_kernel(
    x_ptr, w_ptr, act_ptr, gv_ptr, drop_ptr,
    M, Q, P, half_blocks, half_cols,
    s_xm, s_xk,
    s_wb, s_wq, s_wp,
    s_actm, s_gvm, s_dropm,
    STORE_GV: tl.constexpr,
    HAS_DROP: tl.constexpr,
    DOT_F32: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """act[:, i·Q + n] = GELU(x_i @ W_iᵀ) · (x_{i+k/2} @ W_{i+k/2}ᵀ), i < k/2 (times the dropout mask)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    i = tl.program_id(2)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    mask_m = offs_m[:, None] < M
    mask_n = offs_n[None, :] < Q
    xg = x_ptr + offs_m[:, None] * s_xm + (i * P) * s_xk
    xv = xg + (half_blocks * P) * s_xk
    wg = w_ptr + i * s_wb + offs_n[None, :] * s_wq
    wv = wg + half_blocks * s_wb
    acc_g = tl.zeros((BM, BN), dtype=tl.float32)
    acc_v = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, P, BK):
        kk = k0 + offs_k
        ma = mask_m & (kk[None, :] < P)
        mb = (kk[:, None] < P) & mask_n
        a_g = tl.load(xg + kk[None, :] * s_xk, mask=ma, other=0.0)
        a_v = tl.load(xv + kk[None, :] * s_xk, mask=ma, other=0.0)
        b_g = tl.load(wg + kk[:, None] * s_wp, mask=mb, other=0.0)
        b_v = tl.load(wv + kk[:, None] * s_wp, mask=mb, other=0.0)
        if DOT_F32:
            acc_g = tl.dot(a_g.to(tl.float32), b_g.to(tl.float32), acc_g, input_precision="ieee")
            acc_v = tl.dot(a_v.to(tl.float32), b_v.to(tl.float32), acc_v, input_precision="ieee")
        else:
            acc_g = tl.dot(a_g, b_g, acc_g)
            acc_v = tl.dot(a_v, b_v, acc_v)
    mask = mask_m & mask_n
    col = i * Q + offs_n[None, :]
    if STORE_GV:
        g_ptr = gv_ptr + offs_m[:, None] * s_gvm + col
        tl.store(g_ptr, acc_g.to(gv_ptr.dtype.element_ty), mask=mask)
        tl.store(g_ptr + half_cols, acc_v.to(gv_ptr.dtype.element_ty), mask=mask)
    act = _gelu(acc_g) * acc_v
    if HAS_DROP:
        act = act * tl.load(drop_ptr + offs_m[:, None] * s_dropm + col, mask=mask, other=0.0).to(tl.float32)
    tl.store(act_ptr + offs_m[:, None] * s_actm + col, act.to(act_ptr.dtype.element_ty), mask=mask)
