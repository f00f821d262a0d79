"""`rainmamba bench`: streaming vs windowed per-frame cost, memory over long streams, scan backends.

Everything is measured side by side in one run on this machine; the table says which device.
Prints a table and writes JSON (`--json PATH`).

This package is the core's one home for benchmarks: the verb and its sections here, the scan
backends in `bench.scan`, PyTorch vs ONNX Runtime in `bench.onnx`. A section is a `Section`:
the ROS side (rainmamba_ros) runs this verb with its own sections appended, so the core
never names it.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to ru_maxrss)."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_per_frame(fn, frames: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(frames):
        fn()
    return (time.perf_counter() - t0) / frames * 1000


def bench_stream_vs_window(model_path: str | None, sizes: list[tuple[int, int]], frames: int,
                           window: int) -> list[dict[str, Any]]:
    """Per-frame time of streaming, streaming with the flip ensemble, and windowed (same weights,
    same frames, one after the other in one run)."""
    from rainmamba_core.streaming.derainer import Derainer
    rows = []
    for h, w in sizes:
        rng = np.random.default_rng(0)
        video = rng.integers(0, 256, size=(frames + window + 2, h, w, 3), dtype=np.uint8)
        res = {}
        for name, mode, flip in (('streaming', 'streaming', False), ('flip', 'streaming', True),
                                 ('windowed', 'windowed', False)):
            d = Derainer(model_path, mode=mode, device='cpu', window=window, flip_ensemble=flip)
            it = iter(range(len(video)))
            res[name] = _time_per_frame(lambda: d.process('cam', video[next(it)]), frames, warmup=window)
        rows.append({'size': f'{w}x{h}', 'window': window, 'streaming_ms': res['streaming'],
                     'windowed_ms': res['windowed'], 'ratio': res['windowed'] / res['streaming'],
                     'flip_ensemble_ms': res['flip'], 'flip_ratio': res['flip'] / res['streaming']})
    return rows


def bench_memory(model_path: str | None, size: tuple[int, int], checkpoints: list[int]) -> list[dict[str, Any]]:
    """RSS after N streamed frames; memory must stay flat for an unbounded stream."""
    from rainmamba_core.streaming.derainer import Derainer
    d = Derainer(model_path, mode='streaming', device='cpu')
    h, w = size
    rng = np.random.default_rng(1)
    pool = rng.integers(0, 256, size=(16, h, w, 3), dtype=np.uint8)
    rows, done = [], 0
    stamp = 0
    for target in checkpoints:
        while done < target:
            stamp += 33_000_000
            d.process('cam', pool[done % len(pool)], stamp)
            done += 1
        rows.append({'frames': done, 'size': f'{w}x{h}', 'rss_mb': _rss_mb()})
    base = rows[0]['rss_mb']
    for r in rows:
        r['growth_pct'] = (r['rss_mb'] - base) / base * 100
    return rows


def _table(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f'{title}: (none)'
    keys = list(rows[0])
    fmt = [max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys]
    lines = [title, '  '.join(k.ljust(n) for k, n in zip(keys, fmt))]
    lines += ['  '.join(_fmt(r.get(k)).ljust(n) for k, n in zip(keys, fmt)) for r in rows]
    return '\n'.join(lines)


def _fmt(v: Any) -> str:
    return f'{v:.3g}' if isinstance(v, float) else str(v)


class Section(NamedTuple):
    """One part of `rainmamba bench`, skippable by name with --skip.

    Attributes:
        name: what --skip calls it.
        key: where its result goes in the JSON.
        run: measures, prints its table and returns the JSON-able result (or None).
        add_arguments: its own options, if any.
    """

    name: str
    key: str
    run: Callable[[argparse.Namespace], Any]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def _stream_section(args: argparse.Namespace) -> Any:
    rows = bench_stream_vs_window(args.model, _sizes(args.sizes), args.frames, args.window)
    print(_table('streaming vs windowed, and streaming with the flip ensemble (ms per output frame, CPU)', rows))
    return rows


def _memory_section(args: argparse.Namespace) -> Any:
    marks = [int(v) for v in args.memory_frames.split(',')]
    rows = bench_memory(args.model, _sizes(args.memory_size)[0], marks)
    print(_table('memory over a long stream (RSS, CPU)', rows))
    return rows


def _speed_section(args: argparse.Namespace) -> Any:
    # the streaming step side by side with the code before the speed work and ONNX Runtime
    from rainmamba_core.bench import speed
    ns = argparse.Namespace(sizes='320x240,640x480', frames=args.speed_frames,
                            weights=args.model,
                            reference=speed.REFERENCE_REV, no_onnx=False, threads=args.threads or 2,
                            memory_frames=0, memory_size='160x120', json=None)
    return speed.run(ns)


def _speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--speed-frames', type=int, default=4,
                        help='timed rounds per size of the side-by-side speed section')


def _scan_section(args: argparse.Namespace) -> Any:
    from rainmamba_core.bench.scan import benchmark_scan_backends, format_table
    rows = benchmark_scan_backends(repeats=3)
    print('selective scan backends (CPU)\n' + format_table(rows))
    return rows


SECTIONS: tuple[Section, ...] = (
    Section('speed', 'speed', _speed_section, _speed_arguments),
    Section('stream', 'stream_vs_window', _stream_section),
    Section('memory', 'memory', _memory_section),
    Section('scan', 'scan', _scan_section),
)


def add_arguments(parser: argparse.ArgumentParser, sections: Sequence[Section] = SECTIONS) -> None:
    parser.add_argument('--model', default=None, help='checkpoint (default: the bundled tiny causal model)')
    parser.add_argument('--json', type=Path, default=None, help='write the results here')
    parser.add_argument('--frames', type=int, default=3, help='timed frames per mode and size')
    parser.add_argument('--window', type=int, default=5, help='window length T of windowed mode')
    parser.add_argument('--sizes', default='256x256', help='WxH list for streaming vs windowed')
    parser.add_argument('--memory-frames', default='100,300',
                        help='stream lengths at which RSS is read (the documented run: 100,2000)')
    parser.add_argument('--memory-size', default='160x120', help='WxH of the long memory stream')
    parser.add_argument('--skip', default='',
                        help=f'comma list of sections to skip: {",".join(s.name for s in sections)}')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: leave default)')
    for section in sections:
        if section.add_arguments is not None:
            section.add_arguments(parser)


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(','):
        w, h = item.lower().split('x')
        out.append((int(h), int(w)))
    return out


def run(args: argparse.Namespace, sections: Sequence[Section] = SECTIONS) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(',')))
    result: dict[str, Any] = {'machine': {'platform': platform.platform(), 'cpu_threads': torch.get_num_threads(),
                                          'torch': torch.__version__, 'device': 'cpu (measured)'}}
    for section in sections:
        if section.name in skip:
            continue
        print(f'[bench {time.strftime("%H:%M:%S")}] {section.name}', flush=True)  # say what it is doing
        try:
            out = section.run(args)
        except ImportError as exc:  # an optional dependency (numba, rclpy, ...) is missing
            print(f'{section.name} benchmark unavailable: {exc}')
            continue
        if out is not None:
            result[section.key] = out
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f'wrote {args.json}')
    return 0
