"""Fused CPU selective scan (numba), channel-major: one kernel, parallel over (batch, channel).

Glossary: B batch, D channels (d_inner), L tokens, N state size, G groups of B/C.

`selective_scan_fused` has `selective_scan_ref`'s signature and is the ``fused`` backend of
`rainmamba_core.ops.selective_scan`; with gradients it runs the numba forward/backward kernels of
`rainmamba_core.ops.fused_autograd`. The model's inference path uses the token-major kernels of
`rainmamba_core.ops.fused_tokens` instead (no layout copies).
"""
from __future__ import annotations

import functools

import torch

from rainmamba_core.ops.scan_inputs import SelectiveScanError, check_shapes, discretisation_delta, finish, grouped

try:  # numba is a hard dependency in setup.py, but keep the module importable without it.
    import numba as _numba
    import numpy as _np
    _NUMBA_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the environment
    _numba = None
    _np = None
    _NUMBA_ERROR = f'numba is not importable ({exc}); run: pip install numba'


@functools.lru_cache(maxsize=1)
def _fused_kernel():
    """Compile (or load from numba's on-disk cache) the fused scan kernel."""
    if _numba is None:
        raise SelectiveScanError(f"backend 'fused' is unavailable: {_NUMBA_ERROR}")
    import math

    @_numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
    def scan(u, delta, A, Bt, Ct, Dv, z, bias, h0, softplus, has_d, has_z, has_bias, out, last):
        # u, delta, z, out: (B, D, L); A: (D, N); Bt, Ct: (B, G, L, N) (N contiguous per token);
        # Dv, bias: (D,); h0, last: (B, D, N). One (b, d) pair per parallel iteration, state in a
        # length-N scratch vector: nothing of size (B, D, L, N) ever exists.
        nb, nd, nl = u.shape
        nn = A.shape[1]
        per_group = nd // Bt.shape[1]
        for bd in _numba.prange(nb * nd):
            b = bd // nd
            d = bd - b * nd
            g = d // per_group
            h = _np.empty(nn, dtype=_np.float32)
            a = _np.empty(nn, dtype=_np.float32)
            decay = _np.empty(nn, dtype=_np.float32)
            for i in range(nn):
                h[i] = h0[b, d, i]
                a[i] = A[d, i]
            for t in range(nl):
                dt = delta[b, d, t]
                if has_bias:
                    dt = dt + bias[d]
                if softplus:
                    # torch.nn.functional.softplus with its default threshold of 20
                    dt = dt if dt > 20.0 else _np.float32(math.log1p(math.exp(dt)))
                ut = u[b, d, t]
                x = dt * ut
                # The exps get their own loop: it has no loop-carried dependency, so LLVM can
                # pipeline/vectorise it (measured 2x faster than exp inside the recurrence loop).
                for i in range(nn):
                    decay[i] = _np.exp(dt * a[i])
                acc = _np.float32(0.0)
                for i in range(nn):
                    h[i] = decay[i] * h[i] + x * Bt[b, g, t, i]
                    acc += h[i] * Ct[b, g, t, i]
                if has_d:
                    acc += Dv[d] * ut
                if has_z:
                    zt = z[b, d, t]
                    acc = acc * (zt / (_np.float32(1.0) + _np.float32(math.exp(-zt))))
                out[b, d, t] = acc
            for i in range(nn):
                last[b, d, i] = h[i]

    return scan


def fused_available() -> bool:
    """True when the fused CPU kernel can run (numba importable)."""
    return _numba is not None


def _f32(x: torch.Tensor | None, shape: tuple[int, ...] = ()):
    """Contiguous fp32 numpy view of x, or zeros of `shape` standing in for an absent input."""
    if x is None:
        return _np.zeros(shape, dtype=_np.float32)
    return x.detach().to(torch.float32).contiguous().numpy()


def _selective_scan_fused_grad(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                               return_last_state):
    """Differentiable fused path: numba forward/backward kernels for the recurrence
    (rainmamba_core/ops/fused_autograd.py), discretisation, D and z in PyTorch."""
    from rainmamba_core.ops.fused_autograd import fused_scan_core
    batch, dim, length, n = check_shapes(u, delta, A, initial_state)
    if B.dim() == 4 or C.dim() == 4 or B.dim() == 2:
        raise SelectiveScanError("backend 'fused' with gradients supports per-token B, C of shape "
                                 "(B, N, L) only; use backend='ref' for grouped or constant B/C")
    dt = discretisation_delta(delta, delta_bias, delta_softplus)
    h0 = initial_state if initial_state is not None else u.new_zeros(batch, dim, n, dtype=torch.float32)
    y, last = fused_scan_core(u, dt, A, B, C, h0)
    out = finish(y, u, D, z, u.dtype)
    return (out, last) if return_last_state else out


def selective_scan_fused(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None, return_last_state=False):
    """Fused CPU scan (numba, parallel over B*D), fp32 arithmetic. Without gradients one kernel
    does everything; when a gradient is required, numba forward + backward kernels run the
    recurrence inside a torch.autograd.Function (per-token B, C only).

    fp16/bf16 inputs are upcast to fp32 and the output cast back. The first call compiles the
    kernel (a few seconds) or loads it from numba's cache (``__pycache__`` or NUMBA_CACHE_DIR).

    Raises:
        SelectiveScanError: tensors not on the CPU, a gradient required, or numba missing.
    """
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias, initial_state) if t is not None]
    if any(t.device.type != 'cpu' for t in tensors):
        raise SelectiveScanError("backend 'fused' runs on CPU tensors only; use backend='cuda' or 'ref' "
                                 'for tensors on another device')
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _selective_scan_fused_grad(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                          initial_state, return_last_state)
    kernel = _fused_kernel()
    batch, dim, length, n = check_shapes(u, delta, A, initial_state)
    # (B, G, N, L) -> (B, G, L, N): the kernel reads all N values of one token contiguously.
    Bt = grouped(B, batch, dim, length, 'B').transpose(-1, -2).contiguous().numpy()
    Ct = grouped(C, batch, dim, length, 'C').transpose(-1, -2).contiguous().numpy()
    out = _np.empty((batch, dim, length), dtype=_np.float32)
    last = _np.empty((batch, dim, n), dtype=_np.float32)
    kernel(_f32(u), _f32(delta), _f32(A), Bt, Ct, _f32(D, (dim,)), _f32(z, (1, 1, 1)),
           _f32(delta_bias, (dim,)), _f32(initial_state, (batch, dim, n)),
           bool(delta_softplus), D is not None, z is not None, delta_bias is not None, out, last)
    result = torch.from_numpy(out).to(u.dtype)
    return (result, torch.from_numpy(last)) if return_last_state else result
