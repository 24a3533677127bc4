"""Triton kernels of the fused sequence-mixer convolution. Loaded by :mod:`._loader`, never imported directly.

Activations are (B, L, C) with channels contiguous. The long convolution is a circular
convolution of size N = N1·N2 ≥ 2L (zero-padded), computed in the frequency domain with the
DFT factored as Monarch matrices (notes/monarch-fft.md): view the N rows as (N1, N2), a GEMM
with the N1-point DFT matrix, twiddles, a GEMM with the N2-point DFT matrix, real and
imaginary parts carried in separate tiles; the spectrum comes out in natural order, so the
filter spectrum needs no permutation, and the inverse is the mirror image. The 1/N is folded
into the filter spectrum, computed once per call outside the kernels (it does not depend on
the batch).

Two families, chosen per length by ``plan`` in seq_mixer_conv.py:
* ``seqmix_fwd_kernel`` / ``seqmix_bwd_kernel`` (whole-sequence tiles): one program owns BH
  channels of one batch row (of a group of rows in backward) over the whole length, as an
  (N, BH) tile, and permutes between the two GEMMs in registers.
* ``long_{fwd,bwd}_pass{1,2,3}`` (the four-step FFT, below): the GEMM stages are separate
  kernels joined by an fp32 scratch, so the tiles are blocks of columns or rows.
``shortconv_bwd_kernel`` is the short conv's backward, for both.
"""
import triton
import triton.language as tl


@triton.jit
def _load_mat(ptr, R: tl.constexpr, C: tl.constexpr):
    r = tl.arange(0, R)
    c = tl.arange(0, C)
    return tl.load(ptr + r[:, None] * C + c[None, :])


@triton.jit
def _load_mat_t(ptr, R: tl.constexpr, C: tl.constexpr):
    """The (C, R) transpose of a row-major (R, C) matrix."""
    r = tl.arange(0, R)
    c = tl.arange(0, C)
    return tl.load(ptr + r[None, :] * C + c[:, None])


@triton.jit
def _load_pair(re_ptr, im_ptr, offs, mask):
    """Real and imaginary parts of a scratch tile."""
    return tl.load(re_ptr + offs, mask=mask, other=0.0), tl.load(im_ptr + offs, mask=mask, other=0.0)


@triton.jit
def _store_pair(re_ptr, im_ptr, offs, re, im, mask):
    tl.store(re_ptr + offs, re, mask=mask)
    tl.store(im_ptr + offs, im, mask=mask)


@triton.jit
def _dft_real(x, c1, s1, c2, s2, twr, twi,
              N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, PREC: tl.constexpr):
    """DFT along the rows of a real (N1·N2, BH) tile; natural-order output (re, im)."""
    xr = tl.reshape(x, (N1, N2 * BH))
    ar = tl.reshape(tl.dot(c1, xr, input_precision=PREC), (N1, N2, BH))
    ai = tl.reshape(tl.dot(s1, xr, input_precision=PREC), (N1, N2, BH))
    tr = twr[:, :, None]
    ti = twi[:, :, None]
    br = ar * tr - ai * ti
    bi = ar * ti + ai * tr
    br = tl.reshape(tl.permute(br, (1, 0, 2)), (N2, N1 * BH))
    bi = tl.reshape(tl.permute(bi, (1, 0, 2)), (N2, N1 * BH))
    xr_ = tl.dot(c2, br, input_precision=PREC) - tl.dot(s2, bi, input_precision=PREC)
    xi_ = tl.dot(c2, bi, input_precision=PREC) + tl.dot(s2, br, input_precision=PREC)
    return tl.reshape(xr_, (N1 * N2, BH)), tl.reshape(xi_, (N1 * N2, BH))


@triton.jit
def _idft_real(zr, zi, c1, s1, c2, s2, twr_t, twi_t,
               N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, PREC: tl.constexpr):
    """Real part of the unnormalised inverse DFT of a natural-order (N1·N2, BH) spectrum."""
    zr = tl.reshape(zr, (N2, N1 * BH))
    zi = tl.reshape(zi, (N2, N1 * BH))
    gr = tl.dot(c2, zr, input_precision=PREC) + tl.dot(s2, zi, input_precision=PREC)
    gi = tl.dot(c2, zi, input_precision=PREC) - tl.dot(s2, zr, input_precision=PREC)
    gr = tl.reshape(gr, (N2, N1, BH))
    gi = tl.reshape(gi, (N2, N1, BH))
    tr = twr_t[:, :, None]
    ti = twi_t[:, :, None]
    hr = gr * tr + gi * ti
    hi = gi * tr - gr * ti
    hr = tl.reshape(tl.permute(hr, (1, 0, 2)), (N1, N2 * BH))
    hi = tl.reshape(tl.permute(hi, (1, 0, 2)), (N1, N2 * BH))
    y = tl.dot(c1, hr, input_precision=PREC) + tl.dot(s1, hi, input_precision=PREC)
    return tl.reshape(y, (N1 * N2, BH))


@triton.jit
def _short_conv(p_ptr, m_ptr, w_ptr, b_ptr, offs_n, cols, cmask, L, s_pl, s_pc, s_ml,
                HAS_MASK: tl.constexpr, N: tl.constexpr, BH: tl.constexpr):
    """Depthwise causal conv (kernel 3) of the masked projection at rows offs_n, channels cols."""
    acc = tl.zeros((N, BH), dtype=tl.float32)
    acc += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    for j in tl.static_range(3):
        t = offs_n - (2 - j)
        ok = (t >= 0) & (t < L)
        x = tl.load(p_ptr + t[:, None] * s_pl + cols[None, :] * s_pc, mask=ok[:, None] & cmask[None, :],
                    other=0.0).to(tl.float32)
        if HAS_MASK:
            x = x * tl.load(m_ptr + t * s_ml, mask=ok, other=0.0).to(tl.float32)[:, None]
        acc += x * tl.load(w_ptr + cols * 3 + j, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _row_mask(m_ptr, offs_n, rows, s_ml, HAS_MASK: tl.constexpr):
    """(R, 1): the padding mask at rows offs_n, 0 beyond the sequence."""
    if HAS_MASK:
        return tl.load(m_ptr + offs_n * s_ml, mask=rows, other=0.0).to(tl.float32)[:, None]
    return rows.to(tl.float32)[:, None]


@triton.jit
def _gated_input(p_ptr, m_ptr, scw_ptr, scb_ptr, offs_n, rows, offs_h, hmask, L, H, s_pl, s_pc, s_ml,
                 HAS_MASK: tl.constexpr, R: tl.constexpr, BH: tl.constexpr):
    """x1, x2, v (short conv outputs), the row mask m and w = v·x1·m (zero outside the sequence)."""
    x1 = _short_conv(p_ptr, m_ptr, scw_ptr, scb_ptr, offs_n, offs_h, hmask, L, s_pl, s_pc, s_ml, HAS_MASK, R, BH)
    x2 = _short_conv(p_ptr, m_ptr, scw_ptr, scb_ptr, offs_n, H + offs_h, hmask, L, s_pl, s_pc, s_ml, HAS_MASK, R, BH)
    v = _short_conv(p_ptr, m_ptr, scw_ptr, scb_ptr, offs_n, 2 * H + offs_h, hmask, L, s_pl, s_pc, s_ml, HAS_MASK,
                    R, BH)
    m = _row_mask(m_ptr, offs_n, rows, s_ml, HAS_MASK)
    w = tl.where(rows[:, None] & hmask[None, :], v * x1 * m, 0.0)
    return x1, x2, v, m, w


@triton.jit
def seqmix_fwd_kernel(
    proj_ptr, u_ptr, mask_ptr, scw_ptr, scb_ptr,
    kr_ptr, ki_ptr, bias_ptr, k2r_ptr, k2i_ptr, bias2_ptr,
    c1_ptr, s1_ptr, c2_ptr, s2_ptr, twr_ptr, twi_ptr,
    y_ptr,
    L, H,
    s_pb, s_pl, s_pc, s_ub, s_ul, s_uc, s_mb, s_ml, s_yb, s_yl, s_yc,
    HAS_MASK: tl.constexpr, HAS_RES: tl.constexpr,
    N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, PREC: tl.constexpr,
):
    pid_h = tl.program_id(0)
    b = tl.program_id(1)
    N: tl.constexpr = N1 * N2
    offs_n = tl.arange(0, N)
    offs_h = pid_h * BH + tl.arange(0, BH)
    hmask = offs_h < H
    rows = offs_n < L
    tile_mask = rows[:, None] & hmask[None, :]
    c1 = _load_mat(c1_ptr, N1, N1)
    s1 = _load_mat(s1_ptr, N1, N1)
    c2 = _load_mat(c2_ptr, N2, N2)
    s2 = _load_mat(s2_ptr, N2, N2)
    twr = _load_mat(twr_ptr, N1, N2)
    twi = _load_mat(twi_ptr, N1, N2)
    twr_t = _load_mat_t(twr_ptr, N1, N2)
    twi_t = _load_mat_t(twi_ptr, N1, N2)

    _, x2, _, m, w = _gated_input(proj_ptr + b * s_pb, mask_ptr + b * s_mb, scw_ptr, scb_ptr, offs_n, rows, offs_h,
                                  hmask, L, H, s_pl, s_pc, s_ml, HAS_MASK, N, BH)

    spec = offs_n[:, None] * H + offs_h[None, :]
    wr, wi = _dft_real(w, c1, s1, c2, s2, twr, twi, N1, N2, BH, PREC)
    kr, ki = _load_pair(kr_ptr, ki_ptr, spec, hmask[None, :])
    c = _idft_real(wr * kr - wi * ki, wr * ki + wi * kr, c1, s1, c2, s2, twr_t, twi_t, N1, N2, BH, PREC)
    bias = tl.load(bias_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)[None, :]
    y = (c + w * bias) * x2
    if HAS_RES:
        ui = tl.load(u_ptr + b * s_ub + offs_n[:, None] * s_ul + offs_h[None, :] * s_uc, mask=tile_mask,
                     other=0.0).to(tl.float32) * m
        ur, uim = _dft_real(ui, c1, s1, c2, s2, twr, twi, N1, N2, BH, PREC)
        k2r, k2i = _load_pair(k2r_ptr, k2i_ptr, spec, hmask[None, :])
        c2v = _idft_real(ur * k2r - uim * k2i, ur * k2i + uim * k2r, c1, s1, c2, s2, twr_t, twi_t, N1, N2, BH, PREC)
        bias2 = tl.load(bias2_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)[None, :]
        y += c2v + ui * bias2
    tl.store(y_ptr + b * s_yb + offs_n[:, None] * s_yl + offs_h[None, :] * s_yc,
             y.to(y_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def seqmix_bwd_kernel(
    proj_ptr, u_ptr, mask_ptr, scw_ptr, scb_ptr,
    kr_ptr, ki_ptr, bias_ptr, k2r_ptr, k2i_ptr, bias2_ptr,
    c1_ptr, s1_ptr, c2_ptr, s2_ptr, twr_ptr, twi_ptr,
    dy_ptr, ds_ptr, du_ptr,
    gk_ptr, gk2_ptr, dbias_ptr, dbias2_ptr,
    B, L, H, G,
    s_pb, s_pl, s_pc, s_ub, s_ul, s_uc, s_mb, s_ml, s_db, s_dl, s_dc,
    s_sb, s_sl, s_sc, s_qb, s_ql, s_qc,
    HAS_MASK: tl.constexpr,
    N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, PREC: tl.constexpr,
):
    """Gradients of one channel block over the batch rows g, g+G, ... . Program axis 1 is conv·G + g:
    conv 0, the gated long convolution, writes ds (the short conv's output gradient, for
    :func:`shortconv_bwd_kernel`); conv 1, the residual one, writes du. Each also writes its per-group
    partial sums of the filter-spectrum gradient Σ_b DZ·conj(W) and of its skip weight."""
    pid_h = tl.program_id(0)
    conv = tl.program_id(1) // G
    g = tl.program_id(1) % G
    N: tl.constexpr = N1 * N2
    offs_n = tl.arange(0, N)
    offs_h = pid_h * BH + tl.arange(0, BH)
    hmask = offs_h < H
    rows = offs_n < L
    tile_mask = rows[:, None] & hmask[None, :]
    c1 = _load_mat(c1_ptr, N1, N1)
    s1 = _load_mat(s1_ptr, N1, N1)
    c2 = _load_mat(c2_ptr, N2, N2)
    s2 = _load_mat(s2_ptr, N2, N2)
    twr = _load_mat(twr_ptr, N1, N2)
    twi = _load_mat(twi_ptr, N1, N2)
    twr_t = _load_mat_t(twr_ptr, N1, N2)
    twi_t = _load_mat_t(twi_ptr, N1, N2)
    spec = offs_n[:, None] * H + offs_h[None, :]
    gkr = tl.zeros((N, BH), dtype=tl.float32)
    gki = tl.zeros((N, BH), dtype=tl.float32)
    dbias = tl.zeros((BH,), dtype=tl.float32)
    if conv == 0:
        kr, ki = _load_pair(kr_ptr, ki_ptr, spec, hmask[None, :])
        bias = tl.load(bias_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)[None, :]
        for b in range(g, B, G):
            x1, x2, v, m, w = _gated_input(proj_ptr + b * s_pb, mask_ptr + b * s_mb, scw_ptr, scb_ptr, offs_n, rows,
                                           offs_h, hmask, L, H, s_pl, s_pc, s_ml, HAS_MASK, N, BH)
            wr, wi = _dft_real(w, c1, s1, c2, s2, twr, twi, N1, N2, BH, PREC)
            c = _idft_real(wr * kr - wi * ki, wr * ki + wi * kr, c1, s1, c2, s2, twr_t, twi_t, N1, N2, BH, PREC)
            dy = tl.load(dy_ptr + b * s_db + offs_n[:, None] * s_dl + offs_h[None, :] * s_dc, mask=tile_mask,
                         other=0.0).to(tl.float32)
            dx2 = dy * (c + w * bias)
            dz = dy * x2
            dzr, dzi = _dft_real(dz, c1, s1, c2, s2, twr, twi, N1, N2, BH, PREC)
            gkr += dzr * wr + dzi * wi
            gki += dzi * wr - dzr * wi
            dw = _idft_real(dzr * kr + dzi * ki, dzi * kr - dzr * ki, c1, s1, c2, s2, twr_t, twi_t,
                            N1, N2, BH, PREC) + dz * bias
            dbias += tl.sum(dz * w, axis=0)
            dw = dw * m
            s_base = ds_ptr + b * s_sb + offs_n[:, None] * s_sl
            dt = ds_ptr.dtype.element_ty
            tl.store(s_base + offs_h[None, :] * s_sc, (dw * v).to(dt), mask=tile_mask)
            tl.store(s_base + (H + offs_h[None, :]) * s_sc, dx2.to(dt), mask=tile_mask)
            tl.store(s_base + (2 * H + offs_h[None, :]) * s_sc, (dw * x1).to(dt), mask=tile_mask)
    else:
        kr, ki = _load_pair(k2r_ptr, k2i_ptr, spec, hmask[None, :])
        bias = tl.load(bias2_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)[None, :]
        for b in range(g, B, G):
            m = _row_mask(mask_ptr + b * s_mb, offs_n, rows, s_ml, HAS_MASK)
            ui = tl.load(u_ptr + b * s_ub + offs_n[:, None] * s_ul + offs_h[None, :] * s_uc, mask=tile_mask,
                         other=0.0).to(tl.float32) * m
            ur, uim = _dft_real(ui, c1, s1, c2, s2, twr, twi, N1, N2, BH, PREC)
            dy = tl.load(dy_ptr + b * s_db + offs_n[:, None] * s_dl + offs_h[None, :] * s_dc, mask=tile_mask,
                         other=0.0).to(tl.float32)
            dyr, dyi = _dft_real(dy, c1, s1, c2, s2, twr, twi, N1, N2, BH, PREC)
            gkr += dyr * ur + dyi * uim
            gki += dyi * ur - dyr * uim
            dui = _idft_real(dyr * kr + dyi * ki, dyi * kr - dyr * ki, c1, s1, c2, s2, twr_t, twi_t,
                             N1, N2, BH, PREC) + dy * bias
            dbias += tl.sum(dy * ui, axis=0)
            tl.store(du_ptr + b * s_qb + offs_n[:, None] * s_ql + offs_h[None, :] * s_qc,
                     (dui * m).to(du_ptr.dtype.element_ty), mask=tile_mask)
        gk_ptr = gk2_ptr
        dbias_ptr = dbias2_ptr
    part = g * N * H + spec
    _store_pair(gk_ptr, gk_ptr + G * N * H, part, gkr, gki, hmask[None, :])
    tl.store(dbias_ptr + g * H + offs_h, dbias, mask=hmask)


@triton.jit
def shortconv_bwd_kernel(
    ds_ptr, proj_ptr, mask_ptr, w_ptr, dproj_ptr, dw_ptr, db_ptr,
    B, L, C, G,
    s_sb, s_sl, s_sc, s_pb, s_pl, s_pc, s_mb, s_ml, s_qb, s_ql, s_qc,
    HAS_MASK: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr,
):
    """Backward of the masked depthwise causal conv: d(proj) and per-group partial weight/bias sums."""
    pid_c = tl.program_id(0)
    g = tl.program_id(1)
    offs_c = pid_c * BC + tl.arange(0, BC)
    cmask = offs_c < C
    w0 = tl.load(w_ptr + offs_c * 3 + 0, mask=cmask, other=0.0).to(tl.float32)[None, :]
    w1 = tl.load(w_ptr + offs_c * 3 + 1, mask=cmask, other=0.0).to(tl.float32)[None, :]
    w2 = tl.load(w_ptr + offs_c * 3 + 2, mask=cmask, other=0.0).to(tl.float32)[None, :]
    acc0 = tl.zeros((BC,), dtype=tl.float32)
    acc1 = tl.zeros((BC,), dtype=tl.float32)
    acc2 = tl.zeros((BC,), dtype=tl.float32)
    accb = tl.zeros((BC,), dtype=tl.float32)
    for b in range(g, B, G):
        for l0 in range(0, L, BL):
            t = l0 + tl.arange(0, BL)
            # ds at t, t+1, t+2 and the masked input at t, t-1, t-2.
            ds0 = tl.load(ds_ptr + b * s_sb + t[:, None] * s_sl + offs_c[None, :] * s_sc,
                          mask=(t < L)[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            ds1 = tl.load(ds_ptr + b * s_sb + (t + 1)[:, None] * s_sl + offs_c[None, :] * s_sc,
                          mask=(t + 1 < L)[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            ds2 = tl.load(ds_ptr + b * s_sb + (t + 2)[:, None] * s_sl + offs_c[None, :] * s_sc,
                          mask=(t + 2 < L)[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            dp = w2 * ds0 + w1 * ds1 + w0 * ds2
            p0 = tl.load(proj_ptr + b * s_pb + t[:, None] * s_pl + offs_c[None, :] * s_pc,
                         mask=(t < L)[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            ok1 = (t >= 1) & (t < L + 1)
            p1 = tl.load(proj_ptr + b * s_pb + (t - 1)[:, None] * s_pl + offs_c[None, :] * s_pc,
                         mask=ok1[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            ok2 = (t >= 2) & (t < L + 2)
            p2 = tl.load(proj_ptr + b * s_pb + (t - 2)[:, None] * s_pl + offs_c[None, :] * s_pc,
                         mask=ok2[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            if HAS_MASK:
                m0 = tl.load(mask_ptr + b * s_mb + t * s_ml, mask=t < L, other=0.0).to(tl.float32)[:, None]
                p0 = p0 * m0
                p1 = p1 * tl.load(mask_ptr + b * s_mb + (t - 1) * s_ml, mask=ok1, other=0.0).to(tl.float32)[:, None]
                p2 = p2 * tl.load(mask_ptr + b * s_mb + (t - 2) * s_ml, mask=ok2, other=0.0).to(tl.float32)[:, None]
                dp = dp * m0
            tl.store(dproj_ptr + b * s_qb + t[:, None] * s_ql + offs_c[None, :] * s_qc,
                     dp.to(dproj_ptr.dtype.element_ty), mask=(t < L)[:, None] & cmask[None, :])
            acc2 += tl.sum(ds0 * p0, axis=0)
            acc1 += tl.sum(ds0 * p1, axis=0)
            acc0 += tl.sum(ds0 * p2, axis=0)
            accb += tl.sum(ds0, axis=0)
    base = dw_ptr + g * C * 3 + offs_c * 3
    tl.store(base + 0, acc0, mask=cmask)
    tl.store(base + 1, acc1, mask=cmask)
    tl.store(base + 2, acc2, mask=cmask)
    tl.store(db_ptr + g * C + offs_c, accb, mask=cmask)


# ---------------------------------------------------------------------------------------------
# Long inputs: the same computation in three passes through a global fp32 scratch (the
# "four-step" FFT), so no program holds a whole (N, BH) tile. With n = n1·N2 + n2 (time) and
# k = k1 + N1·k2 (frequency):
#   pass 1, per block of n2 columns:  A[k1, n2] = ω_N^{k1·n2} · Σ_n1 F_N1[k1, n1] x[n1, n2]
#   pass 2, per block of k1 rows:     X[k1, k2] = Σ_n2 F_N2[k2, n2] A[k1, n2]; · filter spectrum;
#                                     the inverse's first stage over k2 and its twiddles
#   pass 3, per block of n2 columns:  y[n1, n2] = Re Σ_k1 conj F_N1[n1, k1] G[k1, n2], + epilogue.
# The scratch is (B, N1, N2, H), indexed [k1, n2]; pass 2 reads and overwrites its own rows.
# Since N ≥ 2L, rows n1 ≥ N1/2 of the input are zero and of the output unused: passes 1 and 3
# multiply by half of F_N1 only. Short conv, gates, masking and skips are recomputed where needed.
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load_block(ptr, R: tl.constexpr, C: tl.constexpr, stride):
    """The top-left (R, C) block of a row-major matrix with row stride ``stride``."""
    r = tl.arange(0, R)
    c = tl.arange(0, C)
    return tl.load(ptr + r[:, None] * stride + c[None, :])


@triton.jit
def _column_rows(j0, L, N1H: tl.constexpr, N2: tl.constexpr, BN2: tl.constexpr):
    """Time rows n = n1·N2 + n2 for n1 < N1/2 and n2 in [j0, j0 + BN2), n1-major, and which are < L."""
    n1 = tl.arange(0, N1H)
    n2 = j0 + tl.arange(0, BN2)
    offs_n = tl.reshape(n1[:, None] * N2 + n2[None, :], (N1H * BN2,))
    return offs_n, offs_n < L


@triton.jit
def _column_program(L, H, N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, BN2: tl.constexpr):
    """A pass-1/pass-3 program's block: first column j0, channels offs_h (hmask), time rows offs_n
    (rows: < L), and the (rows, channels) mask."""
    j0 = tl.program_id(1) * BN2
    offs_h = tl.program_id(0) * BH + tl.arange(0, BH)
    hmask = offs_h < H
    offs_n, rows = _column_rows(j0, L, N1 // 2, N2, BN2)
    return j0, offs_h, hmask, offs_n, rows, rows[:, None] & hmask[None, :]


@triton.jit
def _column_offsets(j0, offs_h, H, N1: tl.constexpr, N2: tl.constexpr, BN2: tl.constexpr):
    """Scratch offsets of [k1, n2, h] for every k1 and n2 in [j0, j0 + BN2): an (N1, BN2, BH) tile."""
    k1 = tl.arange(0, N1)
    n2 = j0 + tl.arange(0, BN2)
    return (k1[:, None, None] * N2 + n2[None, :, None]) * H + offs_h[None, None, :]


@triton.jit
def _row_offsets(i0, offs_h, H, N1: tl.constexpr, N2: tl.constexpr, BK1: tl.constexpr):
    """Scratch offsets of [k1, n2, h] for k1 in [i0, i0 + BK1) and every n2, as an (N2, BK1, BH) tile,
    and offsets of the natural-order spectrum index k = k1 + N1·k2 at the same (k2, k1, h)."""
    k1 = i0 + tl.arange(0, BK1)
    n2 = tl.arange(0, N2)
    scratch = (k1[None, :, None] * N2 + n2[:, None, None]) * H + offs_h[None, None, :]
    spec = (n2[:, None, None] * N1 + k1[None, :, None]) * H + offs_h[None, None, :]
    return scratch, spec


@triton.jit
def _stage1(x, c1h, s1h, twr, twi, N1: tl.constexpr, BN2: tl.constexpr, BH: tl.constexpr, PREC: tl.constexpr):
    """Real rows n1 < N1/2 of a column block, (N1/2·BN2, BH) → twiddled A[k1, n2] as (N1, BN2, BH) re, im."""
    N1H: tl.constexpr = N1 // 2
    xr = tl.reshape(x, (N1H, BN2 * BH))
    ar = tl.reshape(tl.dot(c1h, xr, input_precision=PREC), (N1, BN2, BH))
    ai = tl.reshape(tl.dot(s1h, xr, input_precision=PREC), (N1, BN2, BH))
    tr = twr[:, :, None]
    ti = twi[:, :, None]
    return ar * tr - ai * ti, ar * ti + ai * tr


@triton.jit
def _stage2(ar, ai, c2, s2, N2: tl.constexpr, BK1: tl.constexpr, BH: tl.constexpr, PREC: tl.constexpr):
    """A (N2 (n2), BK1, BH) → spectrum X (N2 (k2), BK1, BH): the N2-point DFT of every k1 row."""
    ar = tl.reshape(ar, (N2, BK1 * BH))
    ai = tl.reshape(ai, (N2, BK1 * BH))
    xr = tl.dot(c2, ar, input_precision=PREC) - tl.dot(s2, ai, input_precision=PREC)
    xi = tl.dot(c2, ai, input_precision=PREC) + tl.dot(s2, ar, input_precision=PREC)
    return tl.reshape(xr, (N2, BK1, BH)), tl.reshape(xi, (N2, BK1, BH))


@triton.jit
def _istage1(zr, zi, c2, s2, twr_t, twi_t, N2: tl.constexpr, BK1: tl.constexpr, BH: tl.constexpr,
             PREC: tl.constexpr):
    """Spectrum Z (N2 (k2), BK1, BH) → G[k1, n2] as (N2 (n2), BK1, BH): inverse N2-point DFT, conj twiddles."""
    zr = tl.reshape(zr, (N2, BK1 * BH))
    zi = tl.reshape(zi, (N2, BK1 * BH))
    gr = tl.reshape(tl.dot(c2, zr, input_precision=PREC) + tl.dot(s2, zi, input_precision=PREC), (N2, BK1, BH))
    gi = tl.reshape(tl.dot(c2, zi, input_precision=PREC) - tl.dot(s2, zr, input_precision=PREC), (N2, BK1, BH))
    tr = twr_t[:, :, None]
    ti = twi_t[:, :, None]
    return gr * tr + gi * ti, gi * tr - gr * ti


@triton.jit
def _istage2(gr, gi, c1r, s1r, N1: tl.constexpr, BN2: tl.constexpr, BH: tl.constexpr, PREC: tl.constexpr):
    """G (N1 (k1), BN2, BH) → real output rows n1 < N1/2 of the column block, (N1/2·BN2, BH)."""
    N1H: tl.constexpr = N1 // 2
    gr = tl.reshape(gr, (N1, BN2 * BH))
    gi = tl.reshape(gi, (N1, BN2 * BH))
    y = tl.dot(c1r, gr, input_precision=PREC) + tl.dot(s1r, gi, input_precision=PREC)
    return tl.reshape(y, (N1H * BN2, BH))


@triton.jit
def _column_twiddles(twr_ptr, twi_ptr, j0, N1: tl.constexpr, N2: tl.constexpr, BN2: tl.constexpr):
    k1 = tl.arange(0, N1)
    n2 = j0 + tl.arange(0, BN2)
    offs = k1[:, None] * N2 + n2[None, :]
    return tl.load(twr_ptr + offs), tl.load(twi_ptr + offs)


@triton.jit
def _row_twiddles(twr_ptr, twi_ptr, i0, N2: tl.constexpr, BK1: tl.constexpr):
    """Twiddles ω_N^{k1·n2} for k1 in [i0, i0 + BK1), every n2, as (N2, BK1)."""
    k1 = i0 + tl.arange(0, BK1)
    n2 = tl.arange(0, N2)
    offs = k1[None, :] * N2 + n2[:, None]
    return tl.load(twr_ptr + offs), tl.load(twi_ptr + offs)


@triton.jit
def _stage1_constants(c1_ptr, s1_ptr, twr_ptr, twi_ptr, j0, N1: tl.constexpr, N2: tl.constexpr,
                      BN2: tl.constexpr):
    """Pass 1's operands: the first N1/2 columns of F_N1 (the input's nonzero rows) and the column
    block's twiddles."""
    N1H: tl.constexpr = N1 // 2
    c1h = _load_block(c1_ptr, N1, N1H, N1)
    s1h = _load_block(s1_ptr, N1, N1H, N1)
    twr, twi = _column_twiddles(twr_ptr, twi_ptr, j0, N1, N2, BN2)
    return c1h, s1h, twr, twi


@triton.jit
def _row_program(c2_ptr, s2_ptr, twr_ptr, twi_ptr, H, N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr,
                 BK1: tl.constexpr):
    """A pass-2 program's block (k1 rows from i0, channels from axis 0): the channel mask, the N2-point
    DFT blocks, its twiddles, and the scratch and spectrum offsets of its (N2, BK1, BH) tiles."""
    i0 = tl.program_id(1) * BK1
    offs_h = tl.program_id(0) * BH + tl.arange(0, BH)
    smask = (offs_h < H)[None, None, :]
    twr, twi = _row_twiddles(twr_ptr, twi_ptr, i0, N2, BK1)
    rel, spec = _row_offsets(i0, offs_h, H, N1, N2, BK1)
    return smask, _load_mat(c2_ptr, N2, N2), _load_mat(s2_ptr, N2, N2), twr, twi, rel, spec


@triton.jit
def long_fwd_pass1(
    proj_ptr, u_ptr, mask_ptr, scw_ptr, scb_ptr, c1_ptr, s1_ptr, twr_ptr, twi_ptr,
    swr_ptr, swi_ptr, sur_ptr, sui_ptr,
    L, H, s_pb, s_pl, s_pc, s_ub, s_ul, s_uc, s_mb, s_ml,
    HAS_MASK: tl.constexpr, HAS_RES: tl.constexpr,
    N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, BN2: tl.constexpr, PREC: tl.constexpr,
):
    """Short conv and gates on the rows of one column block, then the first DFT stage of w (and of u)."""
    b = tl.program_id(2)
    N1H: tl.constexpr = N1 // 2
    j0, offs_h, hmask, offs_n, rows, tile_mask = _column_program(L, H, N1, N2, BH, BN2)
    c1h, s1h, twr, twi = _stage1_constants(c1_ptr, s1_ptr, twr_ptr, twi_ptr, j0, N1, N2, BN2)
    _, _, _, m, w = _gated_input(proj_ptr + b * s_pb, mask_ptr + b * s_mb, scw_ptr, scb_ptr, offs_n, rows, offs_h,
                                 hmask, L, H, s_pl, s_pc, s_ml, HAS_MASK, N1H * BN2, BH)
    offs = tl.cast(b, tl.int64) * N1 * N2 * H + _column_offsets(j0, offs_h, H, N1, N2, BN2)
    smask = hmask[None, None, :]
    ar, ai = _stage1(w, c1h, s1h, twr, twi, N1, BN2, BH, PREC)
    _store_pair(swr_ptr, swi_ptr, offs, ar, ai, smask)
    if HAS_RES:
        ui = tl.load(u_ptr + b * s_ub + offs_n[:, None] * s_ul + offs_h[None, :] * s_uc,
                     mask=rows[:, None] & hmask[None, :], other=0.0).to(tl.float32) * m
        ar, ai = _stage1(ui, c1h, s1h, twr, twi, N1, BN2, BH, PREC)
        _store_pair(sur_ptr, sui_ptr, offs, ar, ai, smask)


@triton.jit
def long_fwd_pass2(
    swr_ptr, swi_ptr, sur_ptr, sui_ptr, kr_ptr, ki_ptr, k2r_ptr, k2i_ptr, c2_ptr, s2_ptr, twr_ptr, twi_ptr,
    B, H,
    N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, BK1: tl.constexpr, PREC: tl.constexpr,
):
    """Second DFT stage, product with the filter spectrum, first inverse stage; in place, per block of k1
    rows. Program axis 2 is conv·B + b: conv 0 is the gated long convolution, 1 the residual one."""
    conv = tl.program_id(2) // B
    b = tl.program_id(2) % B
    if conv == 1:
        swr_ptr, swi_ptr, kr_ptr, ki_ptr = sur_ptr, sui_ptr, k2r_ptr, k2i_ptr
    smask, c2, s2, twr, twi, rel, spec = _row_program(c2_ptr, s2_ptr, twr_ptr, twi_ptr, H, N1, N2, BH, BK1)
    offs = tl.cast(b, tl.int64) * N1 * N2 * H + rel
    xr, xi = _stage2(*_load_pair(swr_ptr, swi_ptr, offs, smask), c2, s2, N2, BK1, BH, PREC)
    kr, ki = _load_pair(kr_ptr, ki_ptr, spec, smask)
    gr, gi = _istage1(xr * kr - xi * ki, xr * ki + xi * kr, c2, s2, twr, twi, N2, BK1, BH, PREC)
    _store_pair(swr_ptr, swi_ptr, offs, gr, gi, smask)


@triton.jit
def long_fwd_pass3(
    proj_ptr, u_ptr, mask_ptr, scw_ptr, scb_ptr, bias_ptr, bias2_ptr, c1_ptr, s1_ptr,
    swr_ptr, swi_ptr, sur_ptr, sui_ptr, y_ptr,
    L, H, s_pb, s_pl, s_pc, s_ub, s_ul, s_uc, s_mb, s_ml, s_yb, s_yl, s_yc,
    HAS_MASK: tl.constexpr, HAS_RES: tl.constexpr,
    N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, BN2: tl.constexpr, PREC: tl.constexpr,
):
    """Last inverse DFT stage of one column block, then the epilogue: (c + w·bias)·x2 (+ residual conv)."""
    b = tl.program_id(2)
    N1H: tl.constexpr = N1 // 2
    j0, offs_h, hmask, offs_n, rows, tile_mask = _column_program(L, H, N1, N2, BH, BN2)
    c1r = _load_block(c1_ptr, N1H, N1, N1)
    s1r = _load_block(s1_ptr, N1H, N1, N1)
    offs = tl.cast(b, tl.int64) * N1 * N2 * H + _column_offsets(j0, offs_h, H, N1, N2, BN2)
    smask = hmask[None, None, :]
    c = _istage2(*_load_pair(swr_ptr, swi_ptr, offs, smask), c1r, s1r, N1, BN2, BH, PREC)
    _, x2, _, m, w = _gated_input(proj_ptr + b * s_pb, mask_ptr + b * s_mb, scw_ptr, scb_ptr, offs_n, rows, offs_h,
                                  hmask, L, H, s_pl, s_pc, s_ml, HAS_MASK, N1H * BN2, BH)
    bias = tl.load(bias_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)[None, :]
    y = (c + w * bias) * x2
    if HAS_RES:
        cu = _istage2(*_load_pair(sur_ptr, sui_ptr, offs, smask), c1r, s1r, N1, BN2, BH, PREC)
        ui = tl.load(u_ptr + b * s_ub + offs_n[:, None] * s_ul + offs_h[None, :] * s_uc, mask=tile_mask,
                     other=0.0).to(tl.float32) * m
        bias2 = tl.load(bias2_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)[None, :]
        y += cu + ui * bias2
    tl.store(y_ptr + b * s_yb + offs_n[:, None] * s_yl + offs_h[None, :] * s_yc, y.to(y_ptr.dtype.element_ty),
             mask=tile_mask)


@triton.jit
def long_bwd_pass1(
    proj_ptr, u_ptr, mask_ptr, scw_ptr, scb_ptr, dy_ptr, c1_ptr, s1_ptr, twr_ptr, twi_ptr,
    swr_ptr, swi_ptr, szr_ptr, szi_ptr, sur_ptr, sui_ptr, syr_ptr, syi_ptr,
    L, H, s_pb, s_pl, s_pc, s_ub, s_ul, s_uc, s_mb, s_ml, s_db, s_dl, s_dc,
    HAS_MASK: tl.constexpr, HAS_RES: tl.constexpr,
    N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, BN2: tl.constexpr, PREC: tl.constexpr,
):
    """First DFT stage of w and dz = dy·x2 (and of the masked u and dy for the residual conv)."""
    b = tl.program_id(2)
    N1H: tl.constexpr = N1 // 2
    j0, offs_h, hmask, offs_n, rows, tile_mask = _column_program(L, H, N1, N2, BH, BN2)
    c1h, s1h, twr, twi = _stage1_constants(c1_ptr, s1_ptr, twr_ptr, twi_ptr, j0, N1, N2, BN2)
    _, x2, _, m, w = _gated_input(proj_ptr + b * s_pb, mask_ptr + b * s_mb, scw_ptr, scb_ptr, offs_n, rows, offs_h,
                                  hmask, L, H, s_pl, s_pc, s_ml, HAS_MASK, N1H * BN2, BH)
    dy = tl.load(dy_ptr + b * s_db + offs_n[:, None] * s_dl + offs_h[None, :] * s_dc, mask=tile_mask,
                 other=0.0).to(tl.float32)
    offs = tl.cast(b, tl.int64) * N1 * N2 * H + _column_offsets(j0, offs_h, H, N1, N2, BN2)
    smask = hmask[None, None, :]
    ar, ai = _stage1(w, c1h, s1h, twr, twi, N1, BN2, BH, PREC)
    _store_pair(swr_ptr, swi_ptr, offs, ar, ai, smask)
    ar, ai = _stage1(dy * x2, c1h, s1h, twr, twi, N1, BN2, BH, PREC)
    _store_pair(szr_ptr, szi_ptr, offs, ar, ai, smask)
    if HAS_RES:
        ui = tl.load(u_ptr + b * s_ub + offs_n[:, None] * s_ul + offs_h[None, :] * s_uc, mask=tile_mask,
                     other=0.0).to(tl.float32) * m
        ar, ai = _stage1(ui, c1h, s1h, twr, twi, N1, BN2, BH, PREC)
        _store_pair(sur_ptr, sui_ptr, offs, ar, ai, smask)
        ar, ai = _stage1(dy, c1h, s1h, twr, twi, N1, BN2, BH, PREC)
        _store_pair(syr_ptr, syi_ptr, offs, ar, ai, smask)


@triton.jit
def long_bwd_pass2(
    swr_ptr, swi_ptr, szr_ptr, szi_ptr, sur_ptr, sui_ptr, syr_ptr, syi_ptr,
    kr_ptr, ki_ptr, k2r_ptr, k2i_ptr, c2_ptr, s2_ptr, twr_ptr, twi_ptr, gkr_ptr, gki_ptr, gk2r_ptr, gk2i_ptr,
    B, H, G,
    N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, BK1: tl.constexpr, PREC: tl.constexpr,
):
    """One block of k1 rows over the batch rows g, g+G, ...; program axis 2 is conv·G + g.
    Conv 0, the gated long convolution: spectra W (input) and DZ (output gradient); conv 1, the
    residual one: U and DY. Each writes its per-group partial filter-spectrum gradient Σ_b DZ·conj(W)
    and, in place, the first inverse stage of the adjoint DZ·conj(K) (over DZ); conv 0 also that of
    W·K (over W: the forward's c, recomputed for the gate's gradient)."""
    conv = tl.program_id(2) // G
    g = tl.program_id(2) % G
    if conv == 1:
        swr_ptr, swi_ptr, szr_ptr, szi_ptr = sur_ptr, sui_ptr, syr_ptr, syi_ptr
        kr_ptr, ki_ptr, gkr_ptr, gki_ptr = k2r_ptr, k2i_ptr, gk2r_ptr, gk2i_ptr
    smask, c2, s2, twr, twi, rel, spec = _row_program(c2_ptr, s2_ptr, twr_ptr, twi_ptr, H, N1, N2, BH, BK1)
    kr, ki = _load_pair(kr_ptr, ki_ptr, spec, smask)
    gkr = tl.zeros((N2, BK1, BH), dtype=tl.float32)
    gki = tl.zeros((N2, BK1, BH), dtype=tl.float32)
    for b in range(g, B, G):
        offs = tl.cast(b, tl.int64) * N1 * N2 * H + rel
        wr, wi = _stage2(*_load_pair(swr_ptr, swi_ptr, offs, smask), c2, s2, N2, BK1, BH, PREC)
        zr, zi = _stage2(*_load_pair(szr_ptr, szi_ptr, offs, smask), c2, s2, N2, BK1, BH, PREC)
        gkr += zr * wr + zi * wi
        gki += zi * wr - zr * wi
        dr, di = _istage1(zr * kr + zi * ki, zi * kr - zr * ki, c2, s2, twr, twi, N2, BK1, BH, PREC)
        _store_pair(szr_ptr, szi_ptr, offs, dr, di, smask)
        if conv == 0:
            cr, ci = _istage1(wr * kr - wi * ki, wr * ki + wi * kr, c2, s2, twr, twi, N2, BK1, BH, PREC)
            _store_pair(swr_ptr, swi_ptr, offs, cr, ci, smask)
    _store_pair(gkr_ptr, gki_ptr, tl.cast(g, tl.int64) * N1 * N2 * H + spec, gkr, gki, smask)


@triton.jit
def long_bwd_pass3(
    proj_ptr, u_ptr, mask_ptr, scw_ptr, scb_ptr, bias_ptr, bias2_ptr, dy_ptr, c1_ptr, s1_ptr,
    swr_ptr, swi_ptr, szr_ptr, szi_ptr, syr_ptr, syi_ptr,
    ds_ptr, du_ptr, dbias_ptr, dbias2_ptr,
    B, L, H, G,
    s_pb, s_pl, s_pc, s_ub, s_ul, s_uc, s_mb, s_ml, s_db, s_dl, s_dc, s_sb, s_sl, s_sc, s_qb, s_ql, s_qc,
    HAS_MASK: tl.constexpr,
    N1: tl.constexpr, N2: tl.constexpr, BH: tl.constexpr, BN2: tl.constexpr, PREC: tl.constexpr,
):
    """Last inverse stages, then the gradients of one column block over the batch rows g, g+G, ...;
    program axis 2 is conv·G + g. Conv 0 (c and the adjoint over W) writes ds, for
    :func:`shortconv_bwd_kernel`; conv 1 (the residual adjoint) writes du. Each writes per-program
    sums of its skip weight's gradient."""
    conv = tl.program_id(2) // G
    g = tl.program_id(2) % G
    N1H: tl.constexpr = N1 // 2
    j0, offs_h, hmask, offs_n, rows, tile_mask = _column_program(L, H, N1, N2, BH, BN2)
    smask = hmask[None, None, :]
    c1r = _load_block(c1_ptr, N1H, N1, N1)
    s1r = _load_block(s1_ptr, N1H, N1, N1)
    rel = _column_offsets(j0, offs_h, H, N1, N2, BN2)
    dbias = tl.zeros((BH,), dtype=tl.float32)
    if conv == 0:
        bias = tl.load(bias_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)[None, :]
        for b in range(g, B, G):
            offs = tl.cast(b, tl.int64) * N1 * N2 * H + rel
            c = _istage2(*_load_pair(swr_ptr, swi_ptr, offs, smask), c1r, s1r, N1, BN2, BH, PREC)
            dwc = _istage2(*_load_pair(szr_ptr, szi_ptr, offs, smask), c1r, s1r, N1, BN2, BH, PREC)
            x1, x2, v, m, w = _gated_input(proj_ptr + b * s_pb, mask_ptr + b * s_mb, scw_ptr, scb_ptr, offs_n, rows,
                                           offs_h, hmask, L, H, s_pl, s_pc, s_ml, HAS_MASK, N1H * BN2, BH)
            dy = tl.load(dy_ptr + b * s_db + offs_n[:, None] * s_dl + offs_h[None, :] * s_dc, mask=tile_mask,
                         other=0.0).to(tl.float32)
            dx2 = dy * (c + w * bias)
            dz = dy * x2
            dw = (dwc + dz * bias) * m
            dbias += tl.sum(dz * w, axis=0)
            s_base = ds_ptr + b * s_sb + offs_n[:, None] * s_sl
            dt = ds_ptr.dtype.element_ty
            tl.store(s_base + offs_h[None, :] * s_sc, (dw * v).to(dt), mask=tile_mask)
            tl.store(s_base + (H + offs_h[None, :]) * s_sc, dx2.to(dt), mask=tile_mask)
            tl.store(s_base + (2 * H + offs_h[None, :]) * s_sc, (dw * x1).to(dt), mask=tile_mask)
    else:
        bias = tl.load(bias2_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)[None, :]
        for b in range(g, B, G):
            offs = tl.cast(b, tl.int64) * N1 * N2 * H + rel
            duc = _istage2(*_load_pair(syr_ptr, syi_ptr, offs, smask), c1r, s1r, N1, BN2, BH, PREC)
            m = _row_mask(mask_ptr + b * s_mb, offs_n, rows, s_ml, HAS_MASK)
            ui = tl.load(u_ptr + b * s_ub + offs_n[:, None] * s_ul + offs_h[None, :] * s_uc, mask=tile_mask,
                         other=0.0).to(tl.float32) * m
            dy = tl.load(dy_ptr + b * s_db + offs_n[:, None] * s_dl + offs_h[None, :] * s_dc, mask=tile_mask,
                         other=0.0).to(tl.float32)
            dbias += tl.sum(dy * ui, axis=0)
            tl.store(du_ptr + b * s_qb + offs_n[:, None] * s_ql + offs_h[None, :] * s_qc,
                     ((duc + dy * bias) * m).to(du_ptr.dtype.element_ty), mask=tile_mask)
        dbias_ptr = dbias2_ptr
    tl.store(dbias_ptr + (g * tl.num_programs(1) + tl.program_id(1)) * H + offs_h, dbias, mask=hmask)
