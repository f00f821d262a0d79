"""Selective scan (Mamba-1 SSM) with an initial state, and its backends.

Glossary: B batch, D channels (d_inner), L tokens, N state size (d_state), G groups of B/C
(B and C are shared by D // G consecutive channels), K chunk length.

The recurrence, per batch b, channel d, state n (mamba_ssm semantics)::

    dt_t  = softplus(delta_t + delta_bias)          (each step optional)
    h_t   = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B_t[n] * u_t,   h_{-1} = h0 (default 0)
    y_t   = sum_n C_t[n] * h_t[n] + D[d] * u_t
    out_t = y_t * silu(z_t)                          (when z is given)

Backends (all return `out` in the dtype of `u`, plus the fp32 last state h_{L-1} on request):

* ``ref``     vectorised reference: discretisation for all steps at once, one small op per step.
              Differentiable. Materialises (B, D, L, N).
* ``loop``    plain step-by-step loop, the obvious oracle (slow; tests only).
* ``chunked`` pure-torch chunked closed form (cumsum/exp/einsum only; the ONNX candidate).
* ``fused``   numba CPU kernel that never materialises (B, D, L, N); forward only.
* ``cuda``    mamba_ssm's compiled kernel + a closed-form correction for h0.
* ``auto``    cuda if possible, else fused if possible (CPU, no grad needed), else ref; logs once.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from rainmamba_core.ops.fused_cpu import _NUMBA_ERROR, fused_available, selective_scan_fused
from rainmamba_core.ops.scan_inputs import SelectiveScanError
from rainmamba_core.ops.scan_inputs import check_shapes as _check_shapes
from rainmamba_core.ops.scan_inputs import discretisation_delta as _discretisation_delta
from rainmamba_core.ops.scan_inputs import finish as _finish
from rainmamba_core.ops.scan_inputs import grouped as _grouped
from rainmamba_core.ops.scan_inputs import per_channel as _per_channel

log = logging.getLogger(__name__)

__all__ = [
    'BACKENDS', 'SelectiveScanError', 'apply_initial_state_correction',
    'default_backend', 'fused_available', 'selective_scan', 'selective_scan_chunked',
    'selective_scan_fused', 'selective_scan_loop', 'selective_scan_ref', 'set_default_backend',
    'use_backend',
]

BACKENDS = ('auto', 'ref', 'loop', 'chunked', 'fused', 'cuda')
CUDA_INSTALL_HINT = ('on a CUDA machine run: MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation '
                     'mamba-ssm causal-conv1d')


# --------------------------------------------------------------------------------------------
# reference and loop
# --------------------------------------------------------------------------------------------

def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, return_last_state=False):
    """Reference selective scan, mamba_ssm semantics plus an initial state. Differentiable.

    All per-step terms are computed at once in fp32; only the recurrence runs step by step
    (one multiply-add on (B, D, N) per token). Memory: O(B*D*L*N).

    Args:
        u: (B, D, L); delta: (B, D, L); A: (D, N);
        B, C: (B, N, L) or (B, G, N, L) ("variable") or constant (D, N);
        D: (D,); z: (B, D, L); delta_bias: (D,); initial_state h0: (B, D, N).
        delta_softplus: apply softplus to delta (+ bias).
        return_last_state: also return h_{L-1}.

    Returns:
        out: (B, D, L) in u's dtype [, last_state: (B, D, N) fp32].
    """
    batch, dim, length, n = _check_shapes(u, delta, A, initial_state)
    dt = _discretisation_delta(delta, delta_bias, delta_softplus)  # (B, D, L)
    Bm = _per_channel(_grouped(B, batch, dim, length, 'B'), dim)  # (B, D|1, N, L)
    Cm = _per_channel(_grouped(C, batch, dim, length, 'C'), dim)
    uf = u.float()
    decay = torch.exp(dt[..., None] * A.float()[:, None, :])  # (B, D, L, N)
    drive = (dt * uf)[..., None] * Bm.transpose(-1, -2)  # (B, D, L, N)
    h = (u.new_zeros(batch, dim, n, dtype=torch.float32) if initial_state is None
         else initial_state.float())
    states = []
    for t in range(length):
        h = decay[:, :, t] * h + drive[:, :, t]
        states.append(h)
    hs = torch.stack(states, dim=2) if states else decay  # (B, D, L, N)
    y = torch.einsum('bdln,bdnl->bdl', hs, Cm.expand(batch, dim, n, length) if Cm.shape[1] == 1 else Cm)
    out = _finish(y, u, D, z, u.dtype)
    return (out, h) if return_last_state else out


def selective_scan_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        initial_state=None, return_last_state=False):
    """Step-by-step oracle: every quantity of step t computed at step t. Same signature as
    `selective_scan_ref`. Slow (tens of small ops per token); used by tests and benchmarks."""
    batch, dim, length, n = _check_shapes(u, delta, A, initial_state)
    Bm = _per_channel(_grouped(B, batch, dim, length, 'B'), dim)
    Cm = _per_channel(_grouped(C, batch, dim, length, 'C'), dim)
    Af = A.float()
    h = (torch.zeros(batch, dim, n, device=u.device) if initial_state is None else initial_state.float())
    outs = []
    for t in range(length):
        dt = delta[:, :, t].float()  # (B, D)
        if delta_bias is not None:
            dt = dt + delta_bias.float()
        if delta_softplus:
            dt = F.softplus(dt)
        ut = u[:, :, t].float()
        h = torch.exp(dt[..., None] * Af) * h + (dt * ut)[..., None] * Bm[..., t]
        y = (h * Cm[..., t]).sum(-1)  # (B, D)
        if D is not None:
            y = y + D.float() * ut
        if z is not None:
            y = y * F.silu(z[:, :, t].float())
        outs.append(y)
    out = torch.stack(outs, dim=2).to(u.dtype) if outs else u.new_zeros(batch, dim, 0)
    return (out, h) if return_last_state else out


# --------------------------------------------------------------------------------------------
# closed-form initial state (used by the CUDA path; pure torch)
# --------------------------------------------------------------------------------------------

def apply_initial_state_correction(y, delta, A, C, initial_state, delta_bias=None, delta_softplus=False,
                                   last_state=None, chunk: int = 1024):
    """Add the effect of h0 to a scan that started from zero state.

    The recurrence is linear in h, so starting from h0 instead of 0 adds, for every step t,
    ``y_t += sum_n C_t[n] * exp(A[d, n] * S_t) * h0[n]`` with ``S_t = sum_{s<=t} dt_s``, and
    ``h_last += exp(A * S_{L-1}) * h0``. ``y`` must be the output BEFORE the silu(z) gate (the
    gate multiplies the whole sum); adding before or after the D*u skip term is the same.

    Args:
        y: (B, D, L) zero-state output (any dtype; the result is fp32).
        delta, delta_bias, delta_softplus: exactly as given to the scan.
        A: (D, N); C: (B, N, L), (B, G, N, L) or (D, N); initial_state: (B, D, N).
        last_state: (B, D, N) zero-state last state, or None.
        chunk: tokens processed at once; bounds the temporary to (B, D, chunk, N).

    Returns:
        corrected y: (B, D, L) fp32, and corrected last state (or None).
    """
    batch, dim, length, n = _check_shapes(y, delta, A, initial_state)
    dt = _discretisation_delta(delta, delta_bias, delta_softplus)
    S = torch.cumsum(dt, dim=-1)  # (B, D, L)
    Cm = _per_channel(_grouped(C, batch, dim, length, 'C'), dim)
    h0 = initial_state.float()
    Af = A.float()
    pieces = []
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        decay = torch.exp(S[:, :, start:stop, None] * Af[:, None, :])  # (B, D, k, N)
        pieces.append(torch.einsum('bdkn,bdn,bdnk->bdk', decay, h0,
                                   Cm[..., start:stop].expand(batch, dim, n, stop - start)))
    y = y.float() + (torch.cat(pieces, dim=-1) if pieces else 0.0)
    if last_state is not None:
        total = S[:, :, -1:] if length else torch.zeros_like(S[:, :, :1])
        last_state = last_state.float() + torch.exp(total * Af) * h0
    return y, last_state


# --------------------------------------------------------------------------------------------
# chunked closed form (pure torch, standard ops only)
# --------------------------------------------------------------------------------------------

def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           initial_state=None, return_last_state=False, chunk: int = 16):
    """Chunked closed-form scan: a loop over chunks of K tokens, closed form inside each chunk.

    Inside a chunk with log-decays a_t = dt_t * A (<= 0 for A < 0) and their in-chunk cumulative
    sums S_t, the state is ``h_t = exp(S_t) h_in + sum_{s<=t} exp(S_t - S_s) x_s`` with
    x_s = dt_s B_s u_s. Only differences S_t - S_s with s <= t are exponentiated (segment sums;
    never exp(-S) divided out, which overflows for long chunks), the rest masked to -inf first.
    The state leaving the chunk is h_{K-1}, carried into the next chunk.

    Memory per chunk: (B, D, N, K) activations plus the (B, D, N, K, K) segment-decay tensor
    (the per-state decay of Mamba-1 makes it N-deep); work is O(B*D*L*K*N), K times the scan's,
    so K is small by default (16; measured on 1x256x5120x16, one thread: K=8 1.8 s, K=32 9.8 s).
    Differentiable; uses only cumsum, exp, mul/add, sum, cat (ONNX-friendly).

    Args and returns: as `selective_scan_ref`, plus chunk: K >= 1. L need not be a multiple of K.
    """
    if chunk < 1:
        raise SelectiveScanError(f'chunk={chunk}: the chunk length must be >= 1')
    batch, dim, length, n = _check_shapes(u, delta, A, initial_state)
    dt = _discretisation_delta(delta, delta_bias, delta_softplus)
    Bm = _per_channel(_grouped(B, batch, dim, length, 'B'), dim)  # (B, D|1, N, L)
    Cm = _per_channel(_grouped(C, batch, dim, length, 'C'), dim)
    Af = A.float()[None, :, :, None]  # (1, D, N, 1)
    uf = u.float()
    # Layout (B, D, N, tokens): the segment sums below reduce over their last (contiguous) axis.
    h = (uf.new_zeros(batch, dim, n) if initial_state is None else initial_state.float())
    full_mask = torch.full((chunk, chunk), float('-inf'), device=u.device).triu(1)  # 0 on/below diag
    ys = []
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        k = stop - start
        dtk = dt[:, :, None, start:stop]  # (B, D, 1, k)
        S = torch.cumsum(dtk * Af, dim=-1)  # (B, D, N, k), non-increasing for A < 0
        x = (dtk * uf[:, :, None, start:stop]) * Bm[..., start:stop]  # (B, D, N, k)
        # seg[..., t, s] = S_t - S_s, finite everywhere; the additive -inf mask (s > t) then makes
        # exp() exactly 0 there. Adding -inf to a finite number never yields NaN.
        seg = S[..., :, None] - S[..., None, :] + full_mask[:k, :k]  # (B, D, N, k, k)
        hs = torch.exp(S) * h[..., None] + (torch.exp(seg) * x[..., None, :]).sum(-1)  # (B, D, N, k)
        ys.append((hs * Cm[..., start:stop]).sum(2))  # (B, D, k)
        h = hs[..., -1]
    y = torch.cat(ys, dim=-1) if ys else uf.new_zeros(batch, dim, 0)
    out = _finish(y, u, D, z, u.dtype)
    return (out, h) if return_last_state else out


# --------------------------------------------------------------------------------------------
# CUDA kernel (mamba_ssm) + closed-form h0
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _cuda_kernel() -> tuple[Any, str | None]:
    """(mamba_ssm's selective_scan_fn or None, reason it is missing). Imported lazily because
    importing mamba_ssm is slow and pulls in triton."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # ImportError, or OSError from a kernel built for another torch
        return None, f'mamba_ssm with its compiled kernel is not importable ({type(exc).__name__}: {exc})'
    return selective_scan_fn, None


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        initial_state=None, return_last_state=False):
    """mamba_ssm's CUDA kernel with an initial state, differentiable.

    The kernel starts from h = 0, so with h0 it runs WITHOUT z (gating is non-linear in y):
    ``y0 + D*u`` and the zero-state last state come from the kernel, then
    `apply_initial_state_correction` adds the h0 term (linear, so its place relative to D*u does
    not matter) and finally ``out = (...) * silu(z)``.
    """
    kernel, why = _cuda_kernel()
    if kernel is None:
        raise SelectiveScanError(f"backend 'cuda' is unavailable: {why}; {CUDA_INSTALL_HINT}")
    if u.device.type != 'cuda':
        raise SelectiveScanError(f"backend 'cuda' needs CUDA tensors, got u on {u.device}; move the "
                                 "model to a GPU or use backend='auto'")
    return scan_with_zero_state_kernel(kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                       initial_state, return_last_state)


def scan_with_zero_state_kernel(kernel, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                delta_softplus=False, initial_state=None, return_last_state=False):
    """Run a zero-initial-state scan `kernel` (mamba_ssm's selective_scan_fn signature) with h0.

    Order: kernel(D, no z) -> y0 + D*u and zero-state last state; + h0 term (closed form);
    then * silu(z). Device-agnostic, so the CPU tests check it with the reference as `kernel`.
    """
    if initial_state is None:
        return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    y0, last0 = kernel(u, delta, A, B, C, D, None, delta_bias, delta_softplus, True)
    y, last = apply_initial_state_correction(y0, delta, A, C, initial_state, delta_bias, delta_softplus,
                                             last_state=last0)
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y


# --------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------

_IMPLS = {
    'ref': selective_scan_ref,
    'loop': selective_scan_loop,
    'chunked': selective_scan_chunked,
    'fused': selective_scan_fused,
    'cuda': selective_scan_cuda,
}
_state = threading.local()
_global_default = 'auto'
_logged: set[tuple[str, str]] = set()
_log_lock = threading.Lock()


def _validate(name: str) -> str:
    if name not in BACKENDS:
        raise SelectiveScanError(f"unknown selective-scan backend '{name}'; expected one of {', '.join(BACKENDS)}")
    return name


def set_default_backend(name: str) -> None:
    """Set the process-wide backend for direct `selective_scan` calls that pass no `backend`.
    `use_backend` overrides it per thread. Models do not read it: a RainMamba carries its own
    choice (`RainMamba.set_scan_backend`, `from_checkpoint(..., scan_backend=...)`)."""
    global _global_default
    _global_default = _validate(name)


def default_backend() -> str | Callable:
    """The backend in effect for this thread (a `use_backend` block, else the global default)."""
    return getattr(_state, 'backend', None) or _global_default


@contextlib.contextmanager
def use_backend(backend: str | Callable) -> Iterator[None]:
    """Context manager selecting the scan backend for direct `selective_scan` calls in this
    thread that pass no `backend`, e.g. ``with use_backend('fused'): selective_scan(...)``.

    `backend` is a registered name or a callable with `selective_scan_ref`'s signature (a
    formulation with its own options). A model's calls pass the model's own choice instead.
    """
    if not callable(backend):
        backend = _validate(backend)
    previous = getattr(_state, 'backend', None)
    _state.backend = backend
    try:
        yield
    finally:
        _state.backend = previous


def _log_once(choice: str, reason: str, level: int = logging.INFO) -> None:
    with _log_lock:
        if (choice, reason) in _logged:
            return
        _logged.add((choice, reason))
    log.log(level, "selective_scan backend 'auto' uses '%s': %s", choice, reason)


def _auto_choice(tensors: list[torch.Tensor]) -> str:
    on_cuda = tensors[0].device.type == 'cuda'
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if on_cuda:
        kernel, why = _cuda_kernel()
        if kernel is not None:
            return 'cuda'
        # A GPU without its kernel is a real degradation (the reference is slow on CUDA): warn.
        _log_once('ref', f'{why}; {CUDA_INSTALL_HINT}', logging.WARNING)
        return 'ref'
    if not fused_available():
        _log_once('ref', _NUMBA_ERROR or 'numba missing', logging.WARNING)
        return 'ref'
    if needs_grad and (tensors[3].dim() != 3 or tensors[4].dim() != 3):
        _log_once('ref', 'a gradient is required and B/C are grouped or constant (fused grad needs (B, N, L))')
        return 'ref'
    _log_once('fused', 'CPU tensors' + (' (differentiable kernels)' if needs_grad else ''))
    return 'fused'


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False, backend: str | None = None):
    """Selective scan through a chosen backend (see the module docstring).

    Args:
        (as `selective_scan_ref`)
        backend: 'auto' | 'ref' | 'loop' | 'chunked' | 'fused' | 'cuda', or a callable with this
            signature (an export formulation); None uses `default_backend()` (set by
            `set_default_backend` / `use_backend`, initially 'auto'). An explicit name runs
            exactly that backend or raises `SelectiveScanError`. The model passes its own
            choice (`RainMamba.scan_backend`), so those defaults serve direct calls only.

    Returns:
        out: (B, D, L) [, last_state: (B, D, N) fp32].
    """
    if backend is None:
        name = default_backend()
    else:
        name = backend if callable(backend) else _validate(backend)
    if callable(name):  # a formulation with its own options (the model's, or a `use_backend` block)
        return name(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)
    if name == 'auto':
        tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias, initial_state) if t is not None]
        name = _auto_choice(tensors)
    return _IMPLS[name](u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)
