"""One side of `rainmamba_core.bench_speed`: a process that steps a model on frames it is sent.

Run as a script (``python speed_worker.py --tree DIR ...``), never imported by the package: it puts
DIR first on sys.path so the same protocol drives this checkout's model code or an older
revision's (``git archive REV rainmamba_core``), with the same weights file and the same frames.

Protocol (JSON lines on stdin/stdout):
    -> {"cmd": "size", "height": H, "width": W, "frames": "frames.npy", "out": "out.npy"}
    <- {"ok": true, "setup_s": ...}                  (model loaded / graph exported, state zeroed)
    -> {"cmd": "step", "i": i}                       frame i of frames.npy, output into out.npy[i]
    <- {"ms": ..., "cpu_ms": ..., "rss_mb": ...}    (wall and process CPU time of the step)
    -> {"cmd": "quit"}
Kinds: ``torch`` (model.step under inference_mode) and ``onnx`` (the exported step in an ONNX
Runtime session made by this checkout's OnnxBackend settings; export time is reported).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--tree', required=True, help='directory holding the rainmamba_core package to use')
    parser.add_argument('--weights', required=True)
    parser.add_argument('--kind', choices=['torch', 'onnx'], default='torch')
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--workdir', default='/tmp')
    args = parser.parse_args()
    # Run as a script, Python put this file's folder first on sys.path, and it holds modules named
    # like packages (bench/onnx.py would shadow onnx): drop it, then put the chosen tree first.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or '.').resolve() != here]
    sys.path.insert(0, args.tree)
    import numpy as np
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from rainmamba_core.models.rainmamba import RainMamba
    model = RainMamba.from_checkpoint(args.weights).eval()
    frames = out = state = session = names = None
    for line in sys.stdin:
        msg = json.loads(line)
        if msg['cmd'] == 'quit':
            break
        if msg['cmd'] == 'size':
            start = time.perf_counter()
            frames = np.load(msg['frames'], mmap_mode='r')
            out = np.lib.format.open_memmap(msg['out'], mode='w+', dtype=np.float32, shape=frames.shape)
            h, w = msg['height'], msg['width']
            state = model.init_state(1, h, w)
            if args.kind == 'onnx':
                from rainmamba_core.backends.onnx_backend import OnnxBackend
                from rainmamba_core.export.onnx_export import export_step
                path = Path(args.workdir) / f'speed_step_{w}x{h}.onnx'
                export_step(model, path, h, w)
                backend = OnnxBackend(path, device='cpu', threads=args.threads)
                session = backend.session
                names = [s['name'] for s in backend.state_layout]
                state = {k: v.numpy() for k, v in state.items()}
            reply = {'ok': True, 'setup_s': round(time.perf_counter() - start, 2)}
        elif msg['cmd'] == 'step':
            i = msg['i']
            x = np.array(frames[i:i + 1], dtype=np.float32)  # a writable copy of the memmapped frame
            start, cpu = time.perf_counter(), time.process_time()
            if args.kind == 'torch':
                with torch.inference_mode():
                    y, state = model.step(torch.from_numpy(x), state)
                y = y.numpy()
            else:
                feeds = {'frame': x, **{'state.' + k: state[k] for k in names}}
                res = session.run(None, feeds)
                y, state = res[0], dict(zip(names, res[1:]))
            ms = (time.perf_counter() - start) * 1e3
            cpu_ms = (time.process_time() - cpu) * 1e3  # all threads; steadier than wall time on a shared CPU
            out[i] = y[0]
            reply = {'ms': ms, 'cpu_ms': cpu_ms, 'rss_mb': _rss_mb()}
        else:
            reply = {'error': f'unknown command {msg}'}
        sys.stdout.write(json.dumps(reply) + '\n')
        sys.stdout.flush()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
