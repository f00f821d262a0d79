"""Per-frame time, PyTorch CPU vs ONNX Runtime CPU, for the tiny (streaming step) and official
(windowed clip of T frames, one clip per output frame) configurations at several sizes.

    python -m rainmamba_core.bench.onnx --json bench_onnx.json [--sizes 320x240 640x480]
    python -m rainmamba_core.bench.onnx --scan-sweep --json scan.json   # scan formulations only

Weights are random (timing does not depend on them). Each entry is written to the JSON as soon as
it is measured, so a run cut short still leaves its numbers. Prints a table at the end.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rainmamba_core.backends.onnx_backend import OnnxBackend
from rainmamba_core.backends.torch_backend import TorchBackend
from rainmamba_core.export.onnx_export import export_clip, export_step
from rainmamba_core.export.scan import scan_function
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig

log = logging.getLogger(__name__)


def _time(fn, frames: int, warmup: int, desc: str) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in tqdm(range(frames), desc=desc, leave=False):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {'median_ms': 1e3 * statistics.median(times), 'min_ms': 1e3 * min(times), 'frames': frames}


def bench_entry(config: str, height: int, width: int, frames: int, warmup: int, threads: int,
                workdir: Path) -> dict[str, Any]:
    """Time one (configuration, size): torch and onnxruntime, interleaved-free but back to back."""
    torch.manual_seed(0)
    cfg = RainMambaConfig.tiny() if config == 'tiny' else RainMambaConfig.official()
    model = RainMamba(cfg).eval()
    entry: dict[str, Any] = {'config': config, 'size': f'{width}x{height}',
                             'mode': 'step' if cfg.causal else f'windowed T={cfg.window}'}
    rng = np.random.default_rng(0)
    torch_be = TorchBackend(model, device='cpu')
    path = workdir / f'{config}_{width}x{height}.onnx'
    start = time.perf_counter()
    if cfg.causal:
        export_step(model, path, height, width)
    else:
        export_clip(model, path, height, width, cfg.window)
    entry['export_s'] = round(time.perf_counter() - start, 1)
    ort_be = OnnxBackend(path, device='cpu', threads=threads)
    if cfg.causal:
        frame = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
        states = {'torch': [torch_be.new_state(height, width)], 'ort': [ort_be.new_state(height, width)]}

        def run(be, key):
            def f():
                _, states[key], _ = be.step(frame, states[key])
            return f
        fns = {'torch': run(torch_be, 'torch'), 'ort': run(ort_be, 'ort')}
    else:
        clip = rng.integers(0, 256, (1, cfg.window, height, width, 3), dtype=np.uint8)
        fns = {'torch': lambda: torch_be.run_clip(clip), 'ort': lambda: ort_be.run_clip(clip)}
    # alternate the two runtimes in rounds so load from other processes hits both alike
    rounds = {'torch': [], 'ort': []}
    for key in fns:
        for _ in range(warmup):
            fns[key]()
    for _ in tqdm(range(frames), desc=f'{config} {width}x{height}', leave=False):
        for key in ('torch', 'ort'):
            start = time.perf_counter()
            fns[key]()
            rounds[key].append(time.perf_counter() - start)
    for key in rounds:
        entry[f'{key}_median_ms'] = round(1e3 * statistics.median(rounds[key]), 2)
        entry[f'{key}_min_ms'] = round(1e3 * min(rounds[key]), 2)
    entry['frames'] = frames
    entry['ort_over_torch'] = round(entry['ort_median_ms'] / entry['torch_median_ms'], 3)
    path.unlink(missing_ok=True)
    return entry


def scan_sweep(variants: list[str], threads: int, workdir: Path, length: int = 4800, dim: int = 64,
               n: int = 8) -> list[dict[str, Any]]:
    """One forward scan with h0 (the tiny model's shape at 320x240) per formulation:chunk."""
    import onnx
    import onnxruntime as ort
    g = torch.Generator().manual_seed(0)
    ins = (torch.randn(1, dim, length, generator=g), torch.randn(1, dim, length, generator=g),
           torch.randn(1, n, length, generator=g), torch.randn(1, n, length, generator=g),
           torch.randn(1, dim, length, generator=g), torch.randn(1, dim, n, generator=g))
    names = ['u', 'delta', 'B', 'C', 'z', 'h0']
    A, D, bias = -4 * torch.rand(dim, n, generator=g), torch.randn(dim, generator=g), torch.randn(dim, generator=g)
    results = []
    for variant in variants:
        formulation, chunk = variant.split(':')
        fn = scan_function(formulation, int(chunk))

        class Scan(torch.nn.Module):
            def forward(self, u, delta, B, C, z, h0):
                return fn(u, delta, A, B, C, D, z, bias, True, h0, True)
        path = workdir / 'scan.onnx'
        start = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(Scan(), ins, str(path), dynamo=False, opset_version=17, input_names=names)
        export_s = time.perf_counter() - start
        nodes = len(onnx.load(str(path)).graph.node)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
        feeds = {k: v.numpy() for k, v in zip(names, ins)}
        t = _time(lambda: sess.run(None, feeds), 5, 1, variant)
        results.append({'variant': variant, 'nodes': nodes, 'export_s': round(export_s, 1),
                        'ort_median_ms': round(t['median_ms'], 2)})
        print(results[-1], flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', type=Path, default=Path('bench_onnx.json'))
    parser.add_argument('--configs', nargs='+', default=['tiny', 'official'], choices=['tiny', 'official'])
    parser.add_argument('--sizes', nargs='+', default=['320x240', '640x480'], help='WxH')
    parser.add_argument('--frames', type=int, default=10, help='timed frames per entry (tiny)')
    parser.add_argument('--official-frames', type=int, default=2, help='timed frames per entry (official)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2, help='torch and onnxruntime intra-op threads')
    parser.add_argument('--scan-sweep', nargs='*', default=None, metavar='FORMULATION:CHUNK',
                        help='only time the scan formulations (default list when given without values)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    meta = {'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
            'threads': args.threads, 'torch': torch.__version__, 'load_avg_start': os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.scan_sweep is not None:
            variants = args.scan_sweep or ['blocked:0', 'blocked:32', 'blocked:128', 'chunked:16', 'chunked:32',
                                           'chunked:64', 'chunked_loop:32', 'chunked_loop:64']
            out = {'meta': meta, 'scan_sweep': scan_sweep(variants, args.threads, Path(tmp))}
            args.json.write_text(json.dumps(out, indent=2))
            return 0
        entries: list[dict[str, Any]] = []
        for config in args.configs:
            for size in args.sizes:
                width, height = (int(v) for v in size.lower().split('x'))
                frames = args.frames if config == 'tiny' else args.official_frames
                try:
                    entries.append(bench_entry(config, height, width, frames, args.warmup, args.threads, Path(tmp)))
                except Exception as exc:  # out of memory, a runtime refusing the graph: record and go on
                    traceback.print_exc()
                    entries.append({'config': config, 'size': size, 'error': f'{type(exc).__name__}: {exc}'[:500]})
                meta['load_avg_end'] = os.getloadavg()
                args.json.write_text(json.dumps({'meta': meta, 'entries': entries}, indent=2))
    print(f"\n{'config':9s} {'size':8s} {'mode':13s} {'torch ms':>9s} {'ort ms':>9s} {'ort/torch':>9s} "
          f"{'export s':>8s}")
    for e in entries:
        if 'error' in e:
            print(f"{e['config']:9s} {e['size']:8s} error: {e['error'][:80]}")
            continue
        print(f"{e['config']:9s} {e['size']:8s} {e['mode']:13s} {e['torch_median_ms']:9.1f} {e['ort_median_ms']:9.1f} "
              f"{e['ort_over_torch']:9.2f} {e['export_s']:8.1f}")
    print(f'(median per frame over {args.frames} tiny / {args.official_frames} official frames, '
          f'{args.threads} threads, load average {meta["load_avg_start"][0]:.1f} at start; JSON: {args.json})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
