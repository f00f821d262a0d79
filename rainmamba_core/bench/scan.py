"""Benchmark of the selective-scan backends on the CPU (forward, no gradient).

FLOP floor: a fused scan needs about 6 FLOPs per (batch, channel, token, state) -- decay
multiply, exp argument, drive multiply-add, output multiply-add -- so GFLOP/s below is
``6*B*D*L*N / time``, a lower bound on useful work, comparable across backends.

The python loop is slow (tens of small ops per token), so it is timed on a prefix of
``loop_prefix`` tokens and scaled linearly to L (its cost per token does not depend on L);
rows measured that way say so in ``note``.

Usage: ``python -m rainmamba_core.bench.scan [--repeats 3] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rainmamba_core.ops import selective_scan as ss

DEFAULT_SHAPES: list[dict[str, Any]] = [
    {'name': 'tiny', 'B': 1, 'D': 64, 'L': 4096, 'N': 8},
    {'name': 'dflt640', 'B': 1, 'D': 64, 'L': 19200, 'N': 8},  # the default's 1/4-grid scan at 640x480
    {'name': 'official', 'B': 1, 'D': 256, 'L': 5120, 'N': 16},
]
# 'tokens': the token-major kernel the mixer uses at inference (ops/fused_tokens.py), timed on
# token-major arrays prepared beforehand, as the mixer hands them over.
BACKENDS = ('loop', 'ref', 'chunked', 'fused', 'tokens')


def _inputs(B: int, D: int, L: int, N: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs shaped like the model's call (softplus'd delta with bias, z gate, h0)."""
    g = torch.Generator().manual_seed(seed)
    return {
        'u': torch.randn(B, D, L, generator=g), 'delta': torch.randn(B, D, L, generator=g) - 2.0,
        'A': -torch.rand(D, N, generator=g) * 8, 'B': torch.randn(B, N, L, generator=g),
        'C': torch.randn(B, N, L, generator=g), 'D': torch.randn(D, generator=g),
        'z': torch.randn(B, D, L, generator=g), 'delta_bias': torch.randn(D, generator=g) * 0.1,
        'initial_state': torch.randn(B, D, N, generator=g),
    }


def _slice(x: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    return {k: (v[..., :length] if k in ('u', 'delta', 'B', 'C', 'z') else v) for k, v in x.items()}


def _time(fn: Callable[[], Any], repeats: int) -> float:
    """Best-of-`repeats` wall time in ms, after one warm-up call (JIT compile, allocator)."""
    fn()
    best = float('inf')
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _tokens_call(x: dict[str, torch.Tensor]) -> Callable[[], Any]:
    """The token-major kernel on x, with the layout conversion done once, outside the timing."""
    import numpy as np

    from rainmamba_core.ops.fused_tokens import kernels, no_low_rank
    scan = kernels()[1]
    tok = lambda t: t.transpose(1, 2).contiguous()  # noqa: E731
    u, delta, z, B, C = (tok(x[k]) for k in ('u', 'delta', 'z', 'B', 'C'))
    A, D, bias, h0 = (x[k].contiguous().numpy() for k in ('A', 'D', 'delta_bias', 'initial_state'))
    out, last = np.empty(u.shape, np.float32), np.empty_like(h0)
    bias_t = torch.from_numpy(bias)

    delta = (delta + bias_t).numpy()  # the mixer's dt_proj adds the bias in its matmul

    def call():
        scan(u.numpy(), delta, *no_low_rank(u.shape[2]), A, B.numpy(), C.numpy(), D, z.numpy(), h0, True, False,
             u.shape[1], False, out, last)
    return call


def benchmark_scan_backends(shapes: list[dict] | None = None, repeats: int = 3,
                            backends: tuple[str, ...] = BACKENDS, loop_prefix: int = 256,
                            chunk: int | None = None) -> list[dict]:
    """Time each backend on each shape.

    Args:
        shapes: dicts with B, D, L, N (and an optional name); default tiny + official.
        repeats: timed runs per measurement (best is reported).
        backends: subset of 'loop', 'ref', 'chunked', 'fused' (unavailable ones are skipped
            with a row whose note says why).
        loop_prefix: tokens the python loop is timed on before scaling to L.
        chunk: chunk length for 'chunked' (default: the function's default).

    Returns:
        One dict per (shape, backend): name, B, D, L, N, backend, ms, gflops, speedup_vs_loop, note.
    """
    rows: list[dict] = []
    for shape in shapes or DEFAULT_SHAPES:
        B, D, L, N = (int(shape[k]) for k in ('B', 'D', 'L', 'N'))
        x = _inputs(B, D, L, N)
        flops = 6.0 * B * D * L * N
        shape_rows = []
        for name in backends:
            note = ''
            kwargs = {'chunk': chunk} if name == 'chunked' and chunk else {}
            if name in ('fused', 'tokens') and not ss.fused_available():
                shape_rows.append({'backend': name, 'ms': None, 'note': 'numba missing'})
                continue
            fn = _tokens_call(x) if name == 'tokens' else getattr(ss, f'selective_scan_{name}')
            with torch.no_grad():
                if name == 'tokens':
                    ms = _time(fn, repeats)
                elif name == 'loop' and L > loop_prefix:
                    xs = _slice(x, loop_prefix)
                    ms = _time(lambda: fn(**xs, delta_softplus=True, return_last_state=True), repeats)
                    ms *= L / loop_prefix
                    note = f'timed on {loop_prefix} tokens, scaled x{L / loop_prefix:.1f}'
                else:
                    ms = _time(lambda: fn(**x, delta_softplus=True, return_last_state=True, **kwargs),
                               repeats)
            shape_rows.append({'backend': name, 'ms': ms, 'note': note})
        loop_ms = next((r['ms'] for r in shape_rows if r['backend'] == 'loop' and r['ms']), None)
        for r in shape_rows:
            r.update(name=shape.get('name', f'{B}x{D}x{L}x{N}'), B=B, D=D, L=L, N=N,
                     gflops=(flops / (r['ms'] * 1e6)) if r['ms'] else None,
                     speedup_vs_loop=(loop_ms / r['ms']) if (loop_ms and r['ms']) else None,
                     threads=torch.get_num_threads())
            rows.append(r)
    return rows


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of `benchmark_scan_backends` rows."""
    head = (f"{'shape':<10} {'B':>2} {'D':>4} {'L':>6} {'N':>3} {'backend':<8} {'ms':>10} {'GFLOP/s':>8} "
            f"{'x loop':>8}  note")
    lines = [head, '-' * len(head)]
    for r in rows:
        ms = f"{r['ms']:.1f}" if r['ms'] is not None else '-'
        gf = f"{r['gflops']:.2f}" if r['gflops'] is not None else '-'
        sp = f"{r['speedup_vs_loop']:.1f}" if r['speedup_vs_loop'] is not None else '-'
        lines.append(f"{r['name']:<10} {r['B']:>2} {r['D']:>4} {r['L']:>6} {r['N']:>3} {r['backend']:<8} "
                     f"{ms:>10} {gf:>8} {sp:>8}  {r['note']}")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the table and optionally write the rows as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per measurement (best kept)')
    parser.add_argument('--json', type=Path, default=None, help='write the rows to this JSON file')
    parser.add_argument('--backends', default=','.join(BACKENDS), help='comma-separated subset')
    parser.add_argument('--chunk', type=int, default=None, help="chunk length for 'chunked'")
    parser.add_argument('--loop-prefix', type=int, default=256, help='tokens the python loop is timed on')
    parser.add_argument('--shape', action='append', default=None, metavar='B,D,L,N',
                        help='benchmark this shape instead of tiny + official (repeatable)')
    args = parser.parse_args(argv)
    shapes = DEFAULT_SHAPES
    if args.shape:
        shapes = [dict(zip('BDLN', map(int, text.split(',')))) for text in args.shape]
    rows = benchmark_scan_backends(shapes, args.repeats, tuple(args.backends.split(',')),
                                   args.loop_prefix, args.chunk)
    print(format_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
