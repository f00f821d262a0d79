"""Selective-scan formulations for ONNX export (standard operators, carried initial state).

Glossary: B batch, D channels (d_inner), L tokens, N state size, K chunk length, c = ceil(L/K)
chunks.

The exported graph must start the scan from the carried state h0 and run fast in ONNX Runtime
without stepping token by token through an ONNX Loop. Three formulations are kept here so that
`python -m rainmamba_core.bench.onnx --scan-sweep` measures them side by side (docs/onnx.md has the numbers):

* ``blocked`` (the default for export): a two-level blocked scan. The L tokens are cut into c
  chunks of K. Pass 1 runs the recurrence inside *all chunks at once*: K serial multiply-adds on
  (B, D, c, N) slices, i.e. L*N*D work in total, not L*K*N*D. Pass 2 carries the state across
  chunks: the chunk-level recurrence H_j = exp(S_j) H_{j-1} + E_j has the same form, so it is
  solved by the same function (recursively, until it fits in one chunk). Pass 3 adds the closed
  form of the state entering each chunk, exp(S_t) * H_in, to every token (S_t = in-chunk
  cumulative log-decay, always <= 0, so nothing overflows). The graph has about 2K nodes per
  level and no Loop; K ~ sqrt(L) balances the levels.
* ``chunked``: `rainmamba_core.ops.selective_scan.selective_scan_chunked` (a loop over chunks,
  unrolled by tracing, with the segment-sum closed form inside each chunk: (B, D, K, K, N) work per
  chunk).
* ``chunked_loop``: the same chunk body inside an ONNX Loop over chunks (TorchScript-scripted so
  the trace keeps the loop), to measure unrolled against Loop.
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from rainmamba_core.errors import RainMambaError
from rainmamba_core.ops import scan_inputs as _si
from rainmamba_core.ops import selective_scan as _ss

SCAN_FORMULATIONS = ('blocked', 'sliced', 'chunked', 'chunked_loop')
DEFAULT_FORMULATION = 'blocked'
DEFAULT_CHUNK = 0  # 0: choose K ~ sqrt(L) per scan (see `auto_chunk`)
# Elements of one (B, D, tokens, N) temporary per scan segment: 2^25 fp32 = 128 MiB. The tiny model's
# scans fit in one segment up to 1280x960; the official model's long clips are split.
SEGMENT_ELEMENTS = 1 << 25


class ExportScanError(RainMambaError, ValueError):
    """An unknown scan formulation or a bad chunk length was asked for."""


def auto_chunk(length: int) -> int:
    """K ~ sqrt(L), at least 8: balances pass 1 (K steps) against pass 2 (L/K steps).

    A divisor of L near sqrt(L) is preferred (within a factor of 2), which saves padding the
    (B, D, L, N) tensors (two full copies in the graph).
    """
    root = math.sqrt(max(length, 1))
    divisors = [k for k in range(max(8, int(root / 2)), int(2 * root) + 1) if length % k == 0]
    if divisors:
        return min(divisors, key=lambda k: abs(k - root))
    return max(8, int(math.ceil(root)))


def linear_recurrence(log_a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """All states of h_t = exp(log_a_t) * h_{t-1} + x_t, h_{-1} = h0, along axis 2.

    Args:
        log_a: (B, D, L, N) log-decays (<= 0 for a stable SSM).
        x: (B, D, L, N) drives.
        h0: (B, D, N) initial state, or None for zeros.
        chunk: K; pass 1 takes K serial steps, the chunk-level carry is solved recursively.
    Returns:
        (B, D, L, N) states h_0 .. h_{L-1}.
    """
    # Python ints, not traced sizes: the export is for one fixed size, and traced integer
    # arithmetic exports floor division as truncating Div (wrong for the negative ceil trick).
    batch, dim, length, n = (int(v) for v in x.shape)
    if length <= chunk:
        a = torch.exp(log_a)
        h = None if h0 is None else h0[:, :, None]  # (B, D, 1, N)
        states = []
        for a_t, x_t in zip(a.split([1] * length, dim=2), x.split([1] * length, dim=2)):  # (B, D, 1, N) each
            h = x_t if h is None else a_t * h + x_t
            states.append(h)
        hs = torch.cat(states, dim=2)
        return hs
    chunks = -(-length // chunk)
    pad = chunks * chunk - length
    if pad:  # zero drive and zero log-decay past the end: earlier states are unaffected
        log_a = F.pad(log_a, (0, 0, 0, pad))
        x = F.pad(x, (0, 0, 0, pad))
    la = log_a.reshape(batch, dim, chunks, chunk, n)  # (B, D, c, K, N)
    xx = x.reshape(batch, dim, chunks, chunk, n)
    # Pass 1: states inside every chunk from a zero start, all chunks in parallel.
    a = torch.exp(la)
    h = None
    local = []
    for a_k, x_k in zip(a.split([1] * chunk, dim=3), xx.split([1] * chunk, dim=3)):  # (B, D, c, 1, N) each
        h = x_k if h is None else a_k * h + x_k
        local.append(h)
    local_hs = torch.cat(local, dim=3)  # (B, D, c, K, N)
    decay = torch.cumsum(la, dim=3)  # (B, D, c, K, N) in-chunk cumulative log-decay, <= 0
    # Pass 2: the state at every chunk end, carried across chunks (same recurrence, shorter).
    ends = linear_recurrence(decay[:, :, :, -1], local_hs[:, :, :, -1], h0, chunk)  # (B, D, c, N)
    first = torch.zeros_like(ends[:, :, :1]) if h0 is None else h0[:, :, None]
    h_in = torch.cat([first, ends[:, :, :-1]], dim=2)  # (B, D, c, N) state entering each chunk
    # Pass 3: closed form of the entering state inside each chunk.
    hs = local_hs + torch.exp(decay) * h_in[:, :, :, None]
    return hs.reshape(batch, dim, chunks * chunk, n)[:, :, :length]


def selective_scan_blocked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           initial_state=None, return_last_state=False, chunk: int = DEFAULT_CHUNK,
                           segment_elements: int = SEGMENT_ELEMENTS):
    """Selective scan via `linear_recurrence` (signature and results as `selective_scan_ref`).

    Long sequences are cut into segments of at most `segment_elements` (B*D*tokens*N) elements,
    scanned one after the other with the state carried, so the graph's (B, D, L, N) temporaries
    (and ONNX Runtime's peak memory) stay bounded at large frames and long clips.

    Args:
        u, delta: (B, D, L); A: (D, N); B, C: (B, N, L) or (B, G, N, L); D: (D,); z: (B, D, L);
        delta_bias: (D,); initial_state: (B, D, N) or None.
        chunk: K, or 0 for `auto_chunk(segment length)`.
        segment_elements: memory bound per segment (elements of one (B, D, tokens, N) tensor).
    Returns:
        out (B, D, L) in u's dtype [, last state (B, D, N) fp32].
    """
    batch, dim, length, n = (int(v) for v in _si.check_shapes(u, delta, A, initial_state))
    dt = _si.discretisation_delta(delta, delta_bias, delta_softplus)  # (B, D, L) fp32
    Bm = _si.per_channel(_si.grouped(B, batch, dim, length, 'B'), dim).transpose(-1, -2)  # (B, D|1, L, N)
    Cm = _si.per_channel(_si.grouped(C, batch, dim, length, 'C'), dim).transpose(-1, -2)
    Af = A.float()[:, None, :]  # (D, 1, N)
    uf = u.float()
    seg_len = max(1, segment_elements // max(1, batch * dim * n))
    segments = -(-length // seg_len)
    seg_len = -(-length // segments)  # equal segments
    h = None if initial_state is None else initial_state.float()
    ys = []
    for start in range(0, length, seg_len):
        stop = min(start + seg_len, length)
        dts = dt[:, :, start:stop]
        log_a = dts[..., None] * Af  # (B, D, l, N)
        x = (dts * uf[:, :, start:stop])[..., None] * Bm[:, :, start:stop]  # (B, D, l, N)
        hs = linear_recurrence(log_a, x, h, chunk or auto_chunk(stop - start))
        ys.append((hs * Cm[:, :, start:stop]).sum(-1))  # (B, D, l)
        h = hs[:, :, -1]
    y = torch.cat(ys, dim=-1) if len(ys) > 1 else ys[0]
    out = _si.finish(y, u, D, z, u.dtype)
    return (out, h) if return_last_state else out


SLICED_CHUNK = 16  # K of the sliced formulation: (c, B, D, N) slices of L/K tokens stay cache-sized


def selective_scan_sliced(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          initial_state=None, return_last_state=False, chunk: int = 0):
    """Selective scan for ONNX Runtime on CPUs: the blocked scan's passes on cache-sized slices.

    Tokens t = j*K + i (chunk j, position i). The K positions are stepped in turn, each step on
    all c chunks at once, so every step works on (c, B, D, N) tensors of L/K tokens (L2-sized at
    the default's shapes) built from (c, B, D) slices of dt and dt*u: nothing of size
    (B, D, L, N) is read back from memory inside the steps. Each step also contracts its local
    states with C right away (y_local) and keeps G_i = exp(S_i) * C_i, S_i the in-chunk cumulative
    log-decay (<= 0, no overflow). The chunk-level carry is `linear_recurrence` on the c chunk
    ends; the entering state's contribution is then sum_n G_i * H_in in one pass.

    Args and returns: as `selective_scan_ref`; chunk: K (0: SLICED_CHUNK).
    """
    batch, dim, length, n = (int(v) for v in _si.check_shapes(u, delta, A, initial_state))
    k = min(chunk or SLICED_CHUNK, max(length, 1))
    c = -(-length // k)
    pad = c * k - length
    dt = _si.discretisation_delta(delta, delta_bias, delta_softplus)  # (B, D, L) fp32
    Bm = _si.grouped(B, batch, dim, length, 'B')  # (B, G, N, L)
    Cm = _si.grouped(C, batch, dim, length, 'C')
    if Bm.shape[1] != 1 or Cm.shape[1] != 1:
        raise ExportScanError("the 'sliced' formulation takes per-token B, C of shape (B, N, L)")
    dtu = dt * u.float()
    if pad:  # dt = 0 past the end: decay 1, drive 0, so the last real state is carried unchanged
        dt, dtu = F.pad(dt, (0, pad)), F.pad(dtu, (0, pad))
        Bm, Cm = F.pad(Bm, (0, pad)), F.pad(Cm, (0, pad))

    def steps(t: torch.Tensor) -> list[torch.Tensor]:  # (B, X, c*K) -> K tensors (c, B, X)
        return list(t.reshape(batch, t.shape[1], c, k).permute(3, 2, 0, 1).unbind(0))

    Af = A.float()
    dts, dtus = steps(dt), steps(dtu)
    Bs, Cs = steps(Bm[:, 0]), steps(Cm[:, 0])  # (c, B, N) each
    h = cum = None
    y_local, gains = [], []
    for i in range(k):
        la = dts[i][..., None] * Af  # (c, B, D, N)
        x = dtus[i][..., None] * Bs[i][:, :, None]
        h = x if h is None else torch.exp(la) * h + x
        cum = la if cum is None else cum + la
        Ci = Cs[i][:, :, None]  # (c, B, 1, N)
        y_local.append((h * Ci).sum(-1))  # (c, B, D)
        gains.append(torch.exp(cum) * Ci)
    # Carry across chunks: H_j = exp(cum_j) H_{j-1} + h_j, H_{-1} = h0, along the chunk axis.
    h0 = None if initial_state is None else initial_state.float()
    ends = linear_recurrence(cum.permute(1, 2, 0, 3), h.permute(1, 2, 0, 3), h0, auto_chunk(c))  # (B, D, c, N)
    first = torch.zeros_like(ends[:, :, :1]) if h0 is None else h0[:, :, None]
    h_in = torch.cat([first, ends[:, :, :-1]], dim=2).permute(2, 0, 1, 3)  # (c, B, D, N) entering state
    y = torch.stack(y_local) + (torch.stack(gains) * h_in).sum(-1)  # (K, c, B, D)
    y = y.permute(2, 3, 1, 0).reshape(batch, dim, c * k)[:, :, :length]
    out = _si.finish(y, u, D, z, u.dtype)
    return (out, ends[:, :, -1]) if return_last_state else out


@torch.jit.script
def _chunk_loop(dt: torch.Tensor, Af: torch.Tensor, x: torch.Tensor, Cm: torch.Tensor, h: torch.Tensor,
                chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scripted loop over chunks (becomes an ONNX Loop): segment-sum closed form in each chunk.

    dt: (B, D, L) with L a multiple of chunk; Af: (D, N); x, Cm: (B, D, L, N); h: (B, D, N).
    Returns y (B, D, L) and the last state (B, D, N).
    """
    length = dt.shape[2]
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=dt.device).tril().unsqueeze(-1)
    ys: list[torch.Tensor] = []
    for i in range(length // chunk):
        start = i * chunk
        S = torch.cumsum(dt[:, :, start:start + chunk].unsqueeze(-1) * Af.unsqueeze(1), dim=2)  # (B, D, K, N)
        seg = S.unsqueeze(3) - S.unsqueeze(2)  # (B, D, t, s, N)
        seg = torch.where(causal, seg, torch.full_like(seg, float('-inf')))
        hs = torch.exp(S) * h.unsqueeze(2) + torch.einsum('bdtsn,bdsn->bdtn', torch.exp(seg),
                                                          x[:, :, start:start + chunk])
        ys.append((hs * Cm[:, :, start:start + chunk]).sum(-1))
        h = hs[:, :, -1]
    return torch.cat(ys, dim=-1), h


def selective_scan_chunked_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                                initial_state=None, return_last_state=False, chunk: int = 64):
    """The chunked closed form with the loop over chunks kept as an ONNX Loop (for measurement)."""
    batch, dim, length, n = (int(v) for v in _si.check_shapes(u, delta, A, initial_state))
    dt = _si.discretisation_delta(delta, delta_bias, delta_softplus)
    Bm = _si.per_channel(_si.grouped(B, batch, dim, length, 'B'), dim).transpose(-1, -2)
    Cm = _si.per_channel(_si.grouped(C, batch, dim, length, 'C'), dim).transpose(-1, -2)
    x = (dt * u.float())[..., None] * Bm  # (B, D, L, N)
    Cm = Cm.expand(batch, dim, length, n)
    pad = -length % chunk
    if pad:  # dt = 0 past the end: decay 1 and zero drive, so the last real state is carried unchanged
        dt, x, Cm = F.pad(dt, (0, pad)), F.pad(x, (0, 0, 0, pad)), F.pad(Cm, (0, 0, 0, pad))
    h0 = (u.new_zeros(batch, dim, n, dtype=torch.float32) if initial_state is None
          else initial_state.float())
    y, last = _chunk_loop(dt, A.float(), x, Cm, h0, chunk)
    out = _si.finish(y[:, :, :length], u, D, z, u.dtype)
    return (out, last) if return_last_state else out


def scan_function(formulation: str = DEFAULT_FORMULATION, chunk: int = DEFAULT_CHUNK,
                  segment_elements: int = SEGMENT_ELEMENTS):
    """The scan callable for a formulation and chunk length: `selective_scan_ref`'s signature
    (positional or keyword), as `use_backend` and the benchmarks call it."""
    if formulation not in SCAN_FORMULATIONS:
        raise ExportScanError(f"scan formulation '{formulation}' is not one of {', '.join(SCAN_FORMULATIONS)}")
    if chunk < 0:
        raise ExportScanError(f'chunk={chunk}: use a chunk length >= 1, or 0 for the automatic choice')
    if formulation == 'blocked':
        return functools.partial(selective_scan_blocked, chunk=chunk, segment_elements=segment_elements)
    if formulation == 'sliced':
        return functools.partial(selective_scan_sliced, chunk=chunk)
    if formulation == 'chunked':
        return functools.partial(_ss.selective_scan_chunked, chunk=chunk or 64)
    return functools.partial(selective_scan_chunked_loop, chunk=chunk or 64)


@contextlib.contextmanager
def export_scan(formulation: str = DEFAULT_FORMULATION, chunk: int = DEFAULT_CHUNK,
                segment_elements: int = SEGMENT_ELEMENTS, model=None) -> Iterator[None]:
    """Route selective scans through an export formulation while tracing: the model's (its
    `scan_backend`, restored afterwards) and, for direct `selective_scan` calls, this thread's."""
    fn = scan_function(formulation, chunk, segment_elements)
    previous = None if model is None else model.scan_backend
    if model is not None:
        model.set_scan_backend(fn)
    try:
        with _ss.use_backend(fn):
            yield
    finally:
        if model is not None:
            model.set_scan_backend(previous)
