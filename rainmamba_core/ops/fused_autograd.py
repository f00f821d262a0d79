"""Differentiable fused CPU selective scan: numba forward and backward kernels.

Training on the CPU needs gradients through the scan; the reference backend's per-token Python
loop is slow under autograd and the chunked closed form costs K times the scan's work. These
kernels do the recurrence itself in compiled code, parallel over (batch, channel):

forward   h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,   y_t = C_t . h_t       (per b, d)
backward  g_h <- g_y_t C_t + g_h;  then through h_t = a_t h_{t-1} + dt_t B_t u_t:
          g_dt += g_h . (A a_t h_{t-1} + B_t u_t),  g_A += g_h dt_t a_t h_{t-1},
          g_B_t += g_h dt_t u_t,  g_u += g_h . dt_t B_t,  g_h <- a_t g_h

The discretisation (bias, softplus), the skip term D*u and the silu(z) gate stay in PyTorch
(autograd handles them); the kernels see dt after softplus. The backward recomputes the states of
one (b, d) row into an (L+1, N) scratch array, so nothing of size (B, D, L, N) is kept between
forward and backward; the per-channel gradients of the shared B and C are written per (b, d)
and summed over d in PyTorch (numba's prange has no safe reduction into shared arrays).

Glossary: B batch, D channels, L tokens, N state size.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

try:
    import numba
except Exception:  # pragma: no cover - numba is in install_requires
    numba = None


@functools.lru_cache(maxsize=1)
def _kernels():
    if numba is None:
        raise RuntimeError('numba is not importable; run: pip install numba')

    @numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
    def forward(u, dt, A, Bt, Ct, h0, y, last):
        # u, dt, y: (B, D, L); A: (D, N); Bt, Ct: (B, L, N); h0, last: (B, D, N)
        nb, nd, nl = u.shape
        nn = A.shape[1]
        for bd in numba.prange(nb * nd):
            b = bd // nd
            d = bd - b * nd
            h = h0[b, d].copy()
            decay = np.empty(nn, dtype=np.float32)
            for t in range(nl):
                s = dt[b, d, t]
                x = s * u[b, d, t]
                for i in range(nn):
                    decay[i] = np.exp(s * A[d, i])
                acc = np.float32(0.0)
                for i in range(nn):
                    h[i] = decay[i] * h[i] + x * Bt[b, t, i]
                    acc += h[i] * Ct[b, t, i]
                y[b, d, t] = acc
            for i in range(nn):
                last[b, d, i] = h[i]

    @numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
    def backward(u, dt, A, Bt, Ct, h0, gy, glast, gu, gdt, gA_part, gB_part, gC_part, gh0):
        # gB_part, gC_part: (B, D, L, N) per-channel contributions; gA_part: (B, D, N)
        nb, nd, nl = u.shape
        nn = A.shape[1]
        for bd in numba.prange(nb * nd):
            b = bd // nd
            d = bd - b * nd
            hs = np.empty((nl + 1, nn), dtype=np.float32)
            for i in range(nn):
                hs[0, i] = h0[b, d, i]
            for t in range(nl):
                s = dt[b, d, t]
                x = s * u[b, d, t]
                for i in range(nn):
                    hs[t + 1, i] = np.exp(s * A[d, i]) * hs[t, i] + x * Bt[b, t, i]
            gh = glast[b, d].copy()
            ga = np.zeros(nn, dtype=np.float32)
            for t in range(nl - 1, -1, -1):
                s = dt[b, d, t]
                ut = u[b, d, t]
                g = gy[b, d, t]
                gs = np.float32(0.0)
                gut = np.float32(0.0)
                for i in range(nn):
                    gh[i] += g * Ct[b, t, i]
                    gC_part[b, d, t, i] = g * hs[t + 1, i]
                    a = np.exp(s * A[d, i])
                    hp = hs[t, i]
                    gs += gh[i] * (A[d, i] * a * hp + Bt[b, t, i] * ut)
                    ga[i] += gh[i] * s * a * hp
                    gB_part[b, d, t, i] = gh[i] * s * ut
                    gut += gh[i] * s * Bt[b, t, i]
                    gh[i] = gh[i] * a
                gdt[b, d, t] = gs
                gu[b, d, t] = gut
            for i in range(nn):
                gh0[b, d, i] = gh[i]
                gA_part[b, d, i] = ga[i]

    return forward, backward


def _np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).contiguous().numpy()


class FusedScanFn(torch.autograd.Function):
    """(u, dt, A, B, C, h0) -> (y, last) with y_t = C_t . h_t; see the module docstring."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, h0):
        fwd, _ = _kernels()
        batch, dim, length = u.shape
        n = A.shape[1]
        Bt, Ct = _np32(B.transpose(1, 2)), _np32(C.transpose(1, 2))  # (B, L, N)
        y = np.empty((batch, dim, length), dtype=np.float32)
        last = np.empty((batch, dim, n), dtype=np.float32)
        fwd(_np32(u), _np32(dt), _np32(A), Bt, Ct, _np32(h0), y, last)
        ctx.save_for_backward(u, dt, A, B, C, h0)
        return torch.from_numpy(y), torch.from_numpy(last)

    @staticmethod
    def backward(ctx, gy, glast):
        _, bwd = _kernels()
        u, dt, A, B, C, h0 = ctx.saved_tensors
        batch, dim, length = u.shape
        n = A.shape[1]
        gy = torch.zeros_like(u, dtype=torch.float32) if gy is None else gy
        glast = torch.zeros_like(h0, dtype=torch.float32) if glast is None else glast
        gu = np.empty((batch, dim, length), dtype=np.float32)
        gdt = np.empty_like(gu)
        ga = np.empty((batch, dim, n), dtype=np.float32)
        gb = np.empty((batch, dim, length, n), dtype=np.float32)
        gc = np.empty_like(gb)
        gh0 = np.empty((batch, dim, n), dtype=np.float32)
        bwd(_np32(u), _np32(dt), _np32(A), _np32(B.transpose(1, 2)), _np32(C.transpose(1, 2)), _np32(h0),
            _np32(gy), _np32(glast), gu, gdt, ga, gb, gc, gh0)
        t = torch.from_numpy
        return (t(gu), t(gdt), t(ga).sum(0), t(gb).sum(1).transpose(1, 2), t(gc).sum(1).transpose(1, 2), t(gh0))


def fused_scan_core(u, dt, A, B, C, h0):
    """Differentiable fused scan core. u, dt: (B, D, L) fp32 (dt after softplus/bias);
    A: (D, N); B, C: (B, N, L); h0: (B, D, N). Returns y (B, D, L) and last state (B, D, N)."""
    return FusedScanFn.apply(u.float(), dt.float(), A.float(), B.float(), C.float(), h0.float())
