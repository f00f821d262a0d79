"""Speed of the streaming step, side by side in one run: this checkout vs a reference revision
(default 28443b7, the code before the speed work) with the same weights on the same frames, and
ONNX Runtime on the exported step.

Each contender is its own process (`speed_worker.py`), so the old code is imported from
``git archive REV rainmamba_core`` untouched. The parent sends the same frame to each in turn,
round after round (A B C A B C ...), so load from other processes hits all of them alike; a short
pause between calls lets spinning thread pools go idle. Reported: median ms per frame, the ratios
(reference / this checkout, onnxruntime / this checkout's PyTorch), the largest relative
difference of the outputs, and RSS at the first and last frame.

    python -m rainmamba_core.bench.speed                           # 320x240, 640x480, 6 frames
    python -m rainmamba_core.bench.speed --frames 20 --memory-frames 2000 --json speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_REV = '28443b7'
# The reference revision reads the checkpoints of its time only: the default shipped since session 18
# reads the aligned previous frame (detail_align), which it does not know. So both sides run, by
# default, the default as of WEIGHTS_REV (session 16's soup: the same network without that input);
# the aligned head's own cost is measured against it in the model card (1.01x the step).
WEIGHTS_REV = 'a8df05a'
WEIGHTS_PATH = 'rainmamba_core/weights/default_tiny.pt'
WORKER = Path(__file__).with_name('speed_worker.py')
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """A speed_worker.py process speaking JSON lines."""

    def __init__(self, name: str, tree: Path, weights: Path, kind: str, threads: int, workdir: Path):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), '--tree', str(tree), '--weights', str(weights), '--kind', kind,
             '--threads', str(threads), '--workdir', str(workdir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(workdir))

    def ask(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(msg) + '\n')
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f'speed worker {self.name} exited (status {self.proc.wait()})')
        reply = json.loads(line)
        if 'error' in reply:
            raise RuntimeError(f'speed worker {self.name}: {reply["error"]}')
        return reply

    def close(self) -> None:
        try:
            self.ask(cmd='quit')
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=60)


def reference_tree(rev: str, workdir: Path) -> Path:
    """`git archive REV rainmamba_core` of this checkout's repository, unpacked under workdir."""
    dest = workdir / f'ref_{rev}'
    if not (dest / 'rainmamba_core').is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(['git', '-C', str(PACKAGE_ROOT), 'archive', rev, 'rainmamba_core'],
                                 check=True, capture_output=True).stdout
        subprocess.run(['tar', '-x', '-C', str(dest)], input=archive, check=True)
    return dest


def reference_weights(workdir: Path, rev: str = WEIGHTS_REV) -> Path:
    """The bundled default as of ``rev`` (`git show`), written under workdir."""
    dest = workdir / f'default_tiny_{rev}.pt'
    if not dest.is_file():
        blob = subprocess.run(['git', '-C', str(PACKAGE_ROOT), 'show', f'{rev}:{WEIGHTS_PATH}'],
                              check=True, capture_output=True).stdout
        dest.write_bytes(blob)
    return dest


def _say(msg: str) -> None:
    print(f'[bench speed {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run_speed(sizes: list[tuple[int, int]], frames: int, weights: Path | None, rev: str = REFERENCE_REV,
              onnx: bool = True, threads: int = 2, memory_frames: int = 0, memory_size: tuple[int, int] = (120, 160),
              pause: float = 0.05) -> dict[str, Any]:
    """Time the contenders side by side (``weights`` None: the default as of WEIGHTS_REV).
    Returns the JSON-ready result (rows per size)."""
    result: dict[str, Any] = {'reference_rev': rev, 'weights': str(weights or f'{WEIGHTS_REV}:{WEIGHTS_PATH}'),
                              'threads': threads,
                              'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                                          'load_avg_start': os.getloadavg()},
                              'rows': [], 'note': 'CPU times are this machine\'s; compare the ratios'}
    with tempfile.TemporaryDirectory(prefix='rainmamba_speed_') as tmp:
        work = Path(tmp)
        _say(f'unpacking the reference revision {rev}')
        ref = reference_tree(rev, work)
        if weights is None:
            weights = reference_weights(work)
        kinds = [('this', PACKAGE_ROOT, 'torch'), (rev, ref, 'torch')] + ([('onnxruntime', PACKAGE_ROOT, 'onnx')]
                                                                           if onnx else [])
        _say('starting ' + ', '.join(f'{n} ({k})' for n, _, k in kinds))
        workers = [Worker(n, tree, weights, k, threads, work) for n, tree, k in kinds]
        try:
            for height, width in sizes:
                rng = np.random.default_rng(height * 7919 + width)
                # a smooth moving scene with rain-like speckles, so the outputs are not all saturated
                base = rng.random((1, 3, height // 8 + 1, width // 8 + 1)).astype(np.float32)
                base = np.kron(base, np.ones((1, 1, 8, 8), np.float32))[:, :, :height, :width]
                clip = np.concatenate([np.roll(base, 2 * t, axis=-1) for t in range(frames + 1)])
                clip = np.clip(clip + (rng.random(clip.shape) > 0.98) * 0.5, 0, 1).astype(np.float32)
                frames_path = work / f'frames_{width}x{height}.npy'
                np.save(frames_path, clip)
                row: dict[str, Any] = {'size': f'{width}x{height}', 'frames': frames}
                for w in workers:
                    _say(f'{width}x{height}: preparing {w.name}' + (' (exporting the step to ONNX)'
                                                                      if w.name == 'onnxruntime' else ''))
                    row[f'{w.name}_setup_s'] = w.ask(cmd='size', height=height, width=width, frames=str(frames_path),
                                                     out=str(work / f'out_{w.name}_{width}x{height}.npy'))['setup_s']
                times: dict[str, list[float]] = {w.name: [] for w in workers}
                cpu: dict[str, list[float]] = {w.name: [] for w in workers}
                rss: dict[str, list[float]] = {w.name: [] for w in workers}
                for i in range(frames + 1):  # frame 0 is the warm-up (JIT, allocator), not timed
                    for w in workers:
                        time.sleep(pause)
                        reply = w.ask(cmd='step', i=i)
                        if i:
                            times[w.name].append(reply['ms'])
                            cpu[w.name].append(reply['cpu_ms'])
                            rss[w.name].append(reply['rss_mb'])
                    _say(f'{width}x{height}: frame {i}/{frames} ' + '  '.join(
                        f'{n} {t[-1]:.0f} ms' for n, t in times.items() if t))
                outs = {w.name: np.load(work / f'out_{w.name}_{width}x{height}.npy') for w in workers}
                for name in times:
                    row[f'{name}_ms'] = round(statistics.median(times[name]), 1)
                    row[f'{name}_cpu_ms'] = round(statistics.median(cpu[name]), 1)
                    row[f'{name}_rss_mb'] = round(rss[name][-1], 1)

                def pair_ratio(a: str, b: str, series: dict[str, list[float]]) -> float:
                    # median of per-round ratios: each pair ran back to back, under the same load
                    return round(statistics.median(x / y for x, y in zip(series[a], series[b])), 2)
                row['speedup_vs_' + rev] = pair_ratio(rev, 'this', times)
                row['speedup_vs_' + rev + '_cpu'] = pair_ratio(rev, 'this', cpu)
                row['rel_diff_vs_' + rev] = float(np.linalg.norm(outs['this'] - outs[rev]) / np.linalg.norm(outs[rev]))
                if onnx:
                    row['ort_over_torch'] = pair_ratio('onnxruntime', 'this', times)
                    row['ort_over_torch_cpu'] = pair_ratio('onnxruntime', 'this', cpu)
                    row['rel_diff_ort'] = float(np.linalg.norm(outs['onnxruntime'] - outs['this'])
                                                / np.linalg.norm(outs['this']))
                result['rows'].append(row)
            if memory_frames:
                result['memory'] = _memory(workers[0], work, memory_size, memory_frames)
        finally:
            for w in workers:
                w.close()
    result['machine']['load_avg_end'] = os.getloadavg()
    return result


def _memory(worker: Worker, work: Path, size: tuple[int, int], count: int) -> dict[str, Any]:
    """RSS of this checkout's torch step over a long stream (frames cycled from a pool of 16)."""
    height, width = size
    _say(f'memory: streaming {count} frames of {width}x{height} through this checkout')
    pool = np.random.default_rng(1).random((16, 3, height, width), dtype=np.float32)
    path = work / 'memory_frames.npy'
    np.save(path, pool)
    worker.ask(cmd='size', height=height, width=width, frames=str(path), out=str(work / 'memory_out.npy'))
    rows = []
    for done in range(1, count + 1):
        reply = worker.ask(cmd='step', i=(done - 1) % len(pool))
        if done in (min(100, count), count) or done % 500 == 0:
            rows.append({'frames': done, 'rss_mb': round(reply['rss_mb'], 1)})
            _say(f'memory: {done} frames, RSS {reply["rss_mb"]:.0f} MB')
    first = rows[0]['rss_mb']
    growth = round((rows[-1]['rss_mb'] - first) / first * 100, 2)
    return {'size': f'{width}x{height}', 'rows': rows, 'growth_pct': growth}


def format_table(result: dict[str, Any]) -> str:
    rev = result['reference_rev']
    nan = float('nan')
    head = (f"{'size':9} {'speed-up vs ' + rev + ' wall/cpu':>28} {'ort/torch wall/cpu':>19} {'this ms':>8} "
            f"{rev + ' ms':>10} {'ort ms':>8} {'rel. diff vs ' + rev:>20} {'rel. diff ort':>13}")
    lines = [head, '-' * len(head)]
    for r in result['rows']:
        lines.append(f"{r['size']:9} {r['speedup_vs_' + rev]:>22.2f}/{r['speedup_vs_' + rev + '_cpu']:<5.2f} "
                     f"{r.get('ort_over_torch', nan):>13.2f}/{r.get('ort_over_torch_cpu', nan):<5.2f} "
                     f"{r['this_ms']:>8.0f} {r[rev + '_ms']:>10.0f} {r.get('onnxruntime_ms', nan):>8.0f} "
                     f"{r['rel_diff_vs_' + rev]:>20.1e} {r.get('rel_diff_ort', nan):>13.1e}")
    lines.append(f"(ratios: median over {result['rows'][0]['frames'] if result['rows'] else 0} rounds of the per-round "
                 f"ratio, wall time and process CPU time; ms: median wall time per frame on this CPU, "
                 f"{result['threads']} threads; load average {result['machine']['load_avg_start'][0]:.1f} at start)")
    if 'memory' in result:
        m = result['memory']
        marks = ', '.join(f"{r['frames']} frames {r['rss_mb']:.0f} MB" for r in m['rows'])
        lines.append(f"memory ({m['size']}): " + marks
                     + f" -> growth {m['growth_pct']:+.1f} %")
    return '\n'.join(lines)


def _sizes(text: str) -> list[tuple[int, int]]:
    return [(int(h), int(w)) for w, h in (s.lower().split('x') for s in text.split(','))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--sizes', default='320x240,640x480', help='WxH list')
    parser.add_argument('--frames', type=int, default=6, help='timed frames per size (after one warm-up frame)')
    parser.add_argument('--weights', type=Path, default=None,
                        help=f'checkpoint for both sides (default: the bundled default as of {WEIGHTS_REV}, '
                             f'which the reference revision can read)')
    parser.add_argument('--reference', default=REFERENCE_REV, help='git revision whose code is the reference')
    parser.add_argument('--no-onnx', action='store_true', help='skip the ONNX Runtime contender')
    parser.add_argument('--threads', type=int, default=2, help='torch / onnxruntime intra-op threads per process')
    parser.add_argument('--memory-frames', type=int, default=0, help='also stream this many frames for RSS')
    parser.add_argument('--memory-size', default='160x120', help='WxH of the memory stream')
    parser.add_argument('--json', type=Path, default=None, help='write the result here')


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which('git') is None:
        raise SystemExit('bench speed needs git (to unpack the reference revision)')
    weights = Path(args.weights) if args.weights else None
    result = run_speed(_sizes(args.sizes), args.frames, weights, args.reference, not args.no_onnx,
                       args.threads, args.memory_frames, _sizes(args.memory_size)[0])
    print('streaming step, side by side (CPU)\n' + format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f'wrote {args.json}')
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
