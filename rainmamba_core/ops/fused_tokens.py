"""Token-major fused CPU kernels for the Mamba mixer at inference (numba, no gradients).

Glossary: B batch, L tokens, D channels (d_inner), N state size, K conv width, S segment length
(tokens scanned from one start state; the backward direction of the causal model restarts at every
frame), blk channels handled together by one parallel job.

The mixer's tensors come out of `in_proj` as (B, L, 2D): token-major, channels contiguous. The
reference path transposes them to (B, D, L) for `F.conv1d` and the scan, flips the backward
direction, and transposes back for `out_proj`; at the default's sizes those copies cost as much as
the scan itself. These kernels read and write token-major arrays (any strides) directly:

* `conv_silu`: the depthwise conv1d of one direction + SiLU. Forward: causal, the carried tail in
  front. Reverse: what the causal conv computes on the flipped segment, written in the original
  order (an anti-causal conv with the kernel reversed, zeros past each segment's end), so the
  backward direction never materialises a flipped copy.
* `scan`: the selective scan of `rainmamba_core.ops.selective_scan` (softplus(delta + bias),
  D skip, silu(z) gate), forward or reverse inside segments, optionally adding into `out` (the
  two directions sum into one buffer). Parallel over (batch, channel blocks); inner loops run
  over a contiguous block of channels so LLVM vectorises them. numba has no vectorised exp
  without Intel's SVML, so `_exp_block` is a range-reduced polynomial exp written as plain
  array arithmetic (max. rel. error 2e-7 for arguments in [-87, 0], tested), which LLVM
  vectorises; it is where the scan spends its time.
"""
from __future__ import annotations

import numpy as np

try:
    import numba as _numba
except Exception:  # pragma: no cover - numba is a dependency; keep the module importable
    _numba = None

BLOCK = 16  # channels per parallel scan job (two AVX2 vectors of fp32)
TOKENS_PER_JOB = 64  # tokens per parallel conv job

_f32 = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _f32(1.4426950408889634), _f32(0.693359375), _f32(-2.12194440e-4)
# Cephes expf minimax coefficients: exp(r) ~ 1 + r + r^2 * P(r) on [-ln2/2, ln2/2].
_P0, _P1, _P2 = _f32(1.9875691500e-4), _f32(1.3981999507e-3), _f32(8.3334519073e-3)
_P3, _P4, _P5 = _f32(4.1665795894e-2), _f32(1.6666665459e-1), _f32(5.0000001201e-1)


def _jit(**kw):
    """numba.njit(cache=True, fastmath=False, ...) or, without numba, a decorator that marks the
    function unavailable (calling `kernels()` then raises with the install hint)."""
    if _numba is None:
        return lambda fn: fn
    return _numba.njit(cache=True, fastmath=False, **kw)


@_jit(inline='always')
def _exp_block(x, out, bits, width):
    """exp of x[:width] into out (arguments clamped to [-87, 88], fp32's normal range); bits is
    an int32 scratch of the same length."""
    fbits = bits.view(np.float32)
    for i in range(width):
        v = min(max(x[i], _f32(-87.0)), _f32(88.0))
        k = np.float32(np.floor(v * _LOG2E + _f32(0.5)))
        r = v - k * _LN2_HI - k * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        out[i] = p * (r * r) + r + _f32(1.0)
        bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)  # 2**k as fp32 bits
    for i in range(width):
        out[i] = out[i] * fbits[i]


# Cephes logf polynomial: log(1 + f) ~ f - f^2/2 + f^3 * P(f) for 1 + f in [sqrt(1/2), sqrt(2)).
_L0, _L1, _L2 = _f32(7.0376836292e-2), _f32(-1.1514610310e-1), _f32(1.1676998740e-1)
_L3, _L4, _L5 = _f32(-1.2420140846e-1), _f32(1.4249322787e-1), _f32(-1.6668057665e-1)
_L6, _L7, _L8 = _f32(2.0000714765e-1), _f32(-2.4999993993e-1), _f32(3.3333331174e-1)
_SQRT2 = _f32(1.4142135623730951)


@_jit(inline='always')
def _softplus_block(x, out, e, ex, bits, width):
    """softplus(x[:width]) into out with torch's threshold 20, vectorisable: `_exp_block`, then
    log(1 + e) from the float's exponent and the Cephes logf polynomial; e < 1e-4 uses
    e - e^2/2 (where 1 + e loses e's digits). e, ex, bits: scratch of the same length."""
    _exp_block(x, e, bits, width)
    ybits = out.view(np.int32)
    for i in range(width):
        out[i] = _f32(1.0) + e[i]
    for i in range(width):
        raw = ybits[i]
        ex[i] = np.float32((raw >> 23) - 127)
        ybits[i] = (raw & 0x7FFFFF) | 0x3F800000  # the mantissa m in [1, 2)
    for i in range(width):
        m = out[i]
        big = m > _SQRT2
        f = m * _f32(0.5) - _f32(1.0) if big else m - _f32(1.0)  # f in [sqrt(1/2) - 1, sqrt(2) - 1)
        k = ex[i] + _f32(1.0) if big else ex[i]
        z = f * f
        p = _L0
        p = p * f + _L1
        p = p * f + _L2
        p = p * f + _L3
        p = p * f + _L4
        p = p * f + _L5
        p = p * f + _L6
        p = p * f + _L7
        p = p * f + _L8
        y = p * f * z + k * _LN2_LO - _f32(0.5) * z
        out[i] = f + y + k * _LN2_HI  # log(u), u = 1 + e rounded
    for i in range(width):
        v = x[i]
        ei = e[i]
        u = _f32(1.0) + ei
        um1 = u - _f32(1.0)  # exact: e's digits that survived in u
        # log1p(e) = log(u) * e / (u - 1) undoes the rounding of 1 + e (Goldberg's trick)
        log1p = out[i] * (ei / um1) if um1 > _f32(0.0) else ei
        small = ei - _f32(0.5) * ei * ei
        out[i] = v if v > _f32(20.0) else (small if ei < _f32(1e-4) else log1p)


@_jit()
def softplus_array(x):
    """`_softplus_block` over a 1-D fp32 array (for tests)."""
    n = x.size
    out, e, ex = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    _softplus_block(x, out, e, ex, np.empty(n, dtype=np.int32), n)
    return out


@_jit()
def exp_array(x):
    """`_exp_block` over a 1-D fp32 array (for tests)."""
    out = np.empty_like(x)
    bits = np.empty(x.size, dtype=np.int32)
    _exp_block(x, out, bits, x.size)
    return out


@_jit(inline='always')
def _conv_token(x, wt, bias, tail, reverse, seg, out, acc, arg, e, bits, b, t):
    k, nd = wt.shape
    for d in range(nd):
        acc[d] = bias[d]
    if not reverse:
        for j in range(k):
            src = t + j - (k - 1)  # token read by tap j; before 0 it is in the carried tail
            if src >= 0:
                for d in range(nd):
                    acc[d] += wt[j, d] * x[b, src, d]
            else:
                for d in range(nd):
                    acc[d] += wt[j, d] * tail[b, k - 1 + src, d]
    else:
        end = (t // seg + 1) * seg  # zeros past the end of this token's segment
        for i in range(k):
            src = t + i
            if src < end:
                for d in range(nd):
                    acc[d] += wt[k - 1 - i, d] * x[b, src, d]
    for d in range(nd):
        arg[d] = -acc[d]
    _exp_block(arg, e, bits, nd)
    for d in range(nd):
        out[b, t, d] = acc[d] / (_f32(1.0) + e[d])  # silu


@_jit(parallel=True, nogil=True)
def conv_silu(x, weight, bias, tail, reverse, seg, out):
    """x: (B, L, D); weight: (D, K); bias: (D,); tail: (B, K-1, D) (read when not reverse);
    out: (B, L, D) = silu(depthwise conv), causal (forward) or reversed-causal in segments of seg."""
    nb, nl, nd = x.shape
    wt = np.ascontiguousarray(weight.T)  # (K, D): channel-contiguous rows
    jobs = (nb * nl + TOKENS_PER_JOB - 1) // TOKENS_PER_JOB
    for job in _numba.prange(jobs):
        acc = np.empty(nd, dtype=np.float32)
        arg = np.empty(nd, dtype=np.float32)
        e = np.empty(nd, dtype=np.float32)
        bits = np.empty(nd, dtype=np.int32)
        for bt in range(job * TOKENS_PER_JOB, min((job + 1) * TOKENS_PER_JOB, nb * nl)):
            b = bt // nl
            _conv_token(x, wt, bias, tail, reverse, seg, out, acc, arg, e, bits, b, bt - b * nl)


@_jit(parallel=True, nogil=True)
def scan(u, delta, dtl, wdt, dbias, A, Bm, Cm, Dv, z, h0, has_z, reverse, seg, accumulate, out, last):
    """Selective scan, token-major. u, delta, z, out: (B, L, D); A: (D, N); Bm, Cm: (B, L, N);
    Dv: (D,); h0, last: (B, D, N). The pre-softplus step is delta + bias: with R = wdt.shape[1]
    > 0 it is computed here from the low-rank dtl (B, L, R), wdt (D, R) (dt_proj's weight) and
    dbias (D,) as (sum_j dtl[t, j] * wdt[d, j]) + dbias[d] (the mixer's dt_proj, without a
    (B, L, D) tensor and a matmul with K = R = 2 that BLAS runs slowly); with R = 0, delta
    (B, L, D) already holds it (dtl, dbias unused). The step is
    dt = softplus(delta), out = (y + D*u) * silu(z), both computed here a block of channels at a
    time with the vectorisable exp/log (a libm call per element would cost more than the scan).
    Segments of `seg` tokens start from h0 (the first) or zero (the others) and run forward or,
    with `reverse`, from their last token to their first; `last` is the state after the final
    segment. `accumulate` adds into out instead of writing."""
    nb, nl, nd = u.shape
    nn = A.shape[1]
    nr = wdt.shape[1]
    blocks = (nd + BLOCK - 1) // BLOCK
    segments = (nl + seg - 1) // seg
    for job in _numba.prange(nb * blocks):
        b = job // blocks
        d0 = (job - b * blocks) * BLOCK
        w = min(BLOCK, nd - d0)
        at = np.empty((nn, BLOCK), dtype=np.float32)  # A transposed: channel-contiguous
        h = np.zeros((nn, BLOCK), dtype=np.float32)
        dtb = np.zeros(BLOCK, dtype=np.float32)  # lanes past w stay 0: their exps are finite
        xb = np.empty(BLOCK, dtype=np.float32)
        arg = np.empty(nn * BLOCK, dtype=np.float32)  # all N decays of a token in one exp pass
        dec = np.empty(nn * BLOCK, dtype=np.float32)
        acc = np.empty(BLOCK, dtype=np.float32)
        bits = np.empty(nn * BLOCK, dtype=np.int32)
        raw = np.empty(BLOCK, dtype=np.float32)
        se = np.empty(BLOCK, dtype=np.float32)
        sx = np.empty(BLOCK, dtype=np.float32)
        gate = np.empty(BLOCK, dtype=np.float32)
        wt = np.zeros((max(nr, 1), BLOCK), dtype=np.float32)  # dt_proj's weight, channel-contiguous
        for j in range(nr):
            for i in range(w):
                wt[j, i] = wdt[d0 + i, j]
        at[:, :] = _f32(0.0)
        for n in range(nn):
            for i in range(w):
                at[n, i] = A[d0 + i, n]
        for s in range(segments):
            start = s * seg
            stop = min(start + seg, nl)
            for n in range(nn):
                for i in range(w):
                    h[n, i] = h0[b, d0 + i, n] if s == 0 else _f32(0.0)
            for step in range(stop - start):
                t = stop - 1 - step if reverse else start + step
                if nr == 0:
                    for i in range(w):
                        raw[i] = delta[b, t, d0 + i]
                else:
                    for i in range(w):
                        raw[i] = dtl[b, t, 0] * wt[0, i]
                    for j in range(1, nr):
                        lj = dtl[b, t, j]
                        for i in range(w):
                            raw[i] += lj * wt[j, i]
                    for i in range(w):
                        raw[i] += dbias[d0 + i]
                _softplus_block(raw, dtb, se, sx, bits, w)
                for i in range(w):
                    xb[i] = dtb[i] * u[b, t, d0 + i]
                    acc[i] = _f32(0.0)
                for n in range(nn):
                    for i in range(BLOCK):
                        arg[n * BLOCK + i] = dtb[i] * at[n, i]
                _exp_block(arg, dec, bits, nn * BLOCK)
                for n in range(nn):
                    bn = Bm[b, t, n]
                    cn = Cm[b, t, n]
                    for i in range(w):
                        hv = dec[n * BLOCK + i] * h[n, i] + xb[i] * bn
                        h[n, i] = hv
                        acc[i] += hv * cn
                if has_z:
                    for i in range(w):
                        raw[i] = -z[b, t, d0 + i]
                    _exp_block(raw, se, bits, w)
                    for i in range(w):
                        gate[i] = -raw[i] / (_f32(1.0) + se[i])  # silu(z)
                for i in range(w):
                    d = d0 + i
                    y = acc[i] + Dv[d] * u[b, t, d]
                    if has_z:
                        y = y * gate[i]
                    if accumulate:
                        out[b, t, d] += y
                    else:
                        out[b, t, d] = y
        for n in range(nn):
            for i in range(w):
                last[b, d0 + i, n] = h[n, i]


def kernels():
    """(conv_silu, scan, exp_array, softplus_array), compiled on first call (or loaded from
    numba's cache)."""
    if _numba is None:
        raise ImportError('numba is not importable; run: pip install numba')
    return conv_silu, scan, exp_array, softplus_array


def no_low_rank(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`scan`'s (dtl, wdt, dbias) arguments when delta is given in full (R = 0)."""
    return (np.zeros((1, 1, 0), np.float32), np.zeros((dim, 0), np.float32), np.zeros(dim, np.float32))


def available() -> bool:
    return _numba is not None


def scan_channel_major(u, delta, A, B, C, D, z, delta_bias, initial_state, reverse: bool = False,
                       seg: int | None = None):
    """`scan` on `selective_scan_ref`-style tensors (u, delta, z: (B, D, L); B, C: (B, N, L)),
    delta_softplus on; returns (out (B, D, L), last state (B, D, N)) as torch tensors. For tests and
    benchmarks: the transposes here are what the mixer's token-major path avoids."""
    import torch
    batch, dim, length = u.shape
    tok = lambda t: np.ascontiguousarray(t.detach().float().transpose(1, 2).numpy())  # noqa: E731
    out = np.empty((batch, length, dim), dtype=np.float32)
    last = np.empty((batch, dim, A.shape[1]), dtype=np.float32)
    h0 = (np.zeros((batch, dim, A.shape[1]), np.float32) if initial_state is None
          else initial_state.detach().float().contiguous().numpy())
    scan(tok(u), tok(delta.float() + delta_bias.float()[:, None]), *no_low_rank(dim),
         A.detach().float().contiguous().numpy(), tok(B),
         tok(C), D.detach().float().contiguous().numpy(), tok(z), h0, True, reverse, seg or max(length, 1), False,
         out, last)
    return torch.from_numpy(out).transpose(1, 2), torch.from_numpy(last)


@_jit(parallel=True, nogil=True)
def dwconv3_step(x, cache, weight, bias, out, new_cache):
    """One causal step of the MLP's depthwise 3x3x3 conv, channels-last, with its cache update.

    x: (B, H, W, C) the new frame; cache: (B, H, W, C, 2) the previous two frames (any strides);
    weight: (C, 3, 3, 3) as (t, dy, dx); bias: (C,); out: (B, H, W, C); new_cache: (B, H, W, C, 2)
    receives (cache frame 1, x). Zero padding in space; one pass instead of stacking the three
    frames (a copy) and a grouped conv over them."""
    nb, nh, nw, nc = x.shape
    wt = np.ascontiguousarray(weight.transpose(1, 2, 3, 0))  # (3, 3, 3, C): channel-contiguous taps
    for job in _numba.prange(nb * nh):
        b = job // nh
        y = job - b * nh
        acc = np.empty(nc, dtype=np.float32)
        for xx in range(nw):
            for c in range(nc):
                acc[c] = bias[c]
            for dy in range(3):
                yy = y + dy - 1
                if yy < 0 or yy >= nh:
                    continue
                for dx in range(3):
                    xs = xx + dx - 1
                    if xs < 0 or xs >= nw:
                        continue
                    for c in range(nc):
                        acc[c] += (wt[0, dy, dx, c] * cache[b, yy, xs, c, 0] + wt[1, dy, dx, c] * cache[b, yy, xs, c, 1]
                                   + wt[2, dy, dx, c] * x[b, yy, xs, c])
            for c in range(nc):
                out[b, y, xx, c] = acc[c]
                new_cache[b, y, xx, c, 0] = cache[b, y, xx, c, 1]
                new_cache[b, y, xx, c, 1] = x[b, y, xx, c]
