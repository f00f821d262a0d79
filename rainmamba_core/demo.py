"""`rainmamba demo`: the whole product on a built-in rainy clip (or your own footage).

With no arguments it makes a short rainy clip itself (synthetic rain over a built-in procedural
driving scene; no third-party data needed), derains it with the bundled default model in
streaming mode, and writes `out/demo/`: derained frames, side-by-side images and an MP4
(rainy | derained | clean), a metrics table (PSNR/SSIM before and after, against the
temporal-median baseline; latency and frames per second) and a one-screen summary.
`run` takes further stages that receive the rainy clip: the `rainmamba demo` command adds the ROS
ones (on the ROS side, rainmamba_ros: bag, replay, live node; `--no-ros` skips them).
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--input', default='builtin',
                        help="clean or rainy source: 'builtin' (default), a video, a frame folder, an image or a bag")
    parser.add_argument('--rainy', action='store_true',
                        help='the input is already rainy (no synthetic rain, no ground-truth metrics)')
    parser.add_argument('--out', type=Path, default=Path('out/demo'), help='output folder (default out/demo)')
    parser.add_argument('--model', default=None, help='checkpoint or .onnx (default: the bundled tiny model)')
    parser.add_argument('--frames', type=int, default=24, help='frames of the built-in clip (default 24)')
    parser.add_argument('--size', default='320x240', help='WxH of the built-in clip (default 320x240)')
    parser.add_argument('--preset', default='heavy', help='synthetic rain preset: drizzle|light|moderate|heavy|storm')
    parser.add_argument('--seed', type=int, default=7, help='seed of the scene, camera motion and rain')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda')

# A further demo stage: (args, rainy clip (T, H, W, 3) uint8 RGB, output folder) -> None.
Stage = Callable[[argparse.Namespace, np.ndarray, Path], None]


def _side_by_side(*frames: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    tiles = []
    for f, label in zip(frames, labels):
        t = np.ascontiguousarray(f.copy())
        cv2.putText(t, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(t, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(t)
    return np.concatenate(tiles, axis=1)


def make_clip(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None]:
    """Returns (rainy (T,H,W,3), clean or None)."""
    from rainmamba_core.data.clips import load_clip
    from rainmamba_core.data.synthetic_rain import add_rain
    w, h = (int(v) for v in args.size.lower().split('x'))
    clean = load_clip(args.input, frames=args.frames, size=(h, w) if args.input == 'builtin' else None,
                      seed=args.seed)
    if args.rainy:
        return clean, None
    rc = add_rain(clean, preset=args.preset, seed=args.seed)
    return rc.rainy, rc.clean


def run(args: argparse.Namespace, stages: Sequence[Stage] = ()) -> int:
    """Derain the clip, write the outputs, then run `stages` in order."""
    from rainmamba_core.data.clips import write_mp4
    from rainmamba_core.eval.baselines import temporal_median
    from rainmamba_core.eval.metrics import clip_metrics
    from rainmamba_core.streaming.derainer import Derainer

    # The model first: a bad --model fails before anything is made or written.
    derainer = Derainer(args.model, mode='streaming', device=args.device)
    print(f'[demo] model: {args.model or "bundled default (tiny causal)"} on {derainer.device} '
          f'({derainer.backend_name})')
    out_dir: Path = args.out
    t0 = time.perf_counter()
    rainy, clean = make_clip(args)
    print(f'[demo] clip: {len(rainy)} frames {rainy.shape[2]}x{rainy.shape[1]} '
          f'({"synthetic " + args.preset + " rain" if clean is not None else "rainy input"})')
    (out_dir / 'frames').mkdir(parents=True, exist_ok=True)
    derained, latency = [], []
    for i, frame in enumerate(rainy):
        s = time.perf_counter()
        derained.append(derainer.process('demo', frame, stamp_ns=i * 100_000_000))
        latency.append((time.perf_counter() - s) * 1000)
    derained_arr = np.stack(derained)
    panels = []
    for i, (r, d) in enumerate(zip(rainy, derained_arr)):
        cv2.imwrite(str(out_dir / 'frames' / f'{i:05d}.png'), cv2.cvtColor(d, cv2.COLOR_RGB2BGR))
        extra = (clean[i],) if clean is not None else ()
        labels = ('rainy', 'derained') + (('clean',) if clean is not None else ())
        panels.append(_side_by_side(r, d, *extra, labels=labels))
    mid = len(panels) // 2
    cv2.imwrite(str(out_dir / 'side_by_side.png'), cv2.cvtColor(panels[mid], cv2.COLOR_RGB2BGR))
    mp4 = write_mp4(out_dir / 'side_by_side.mp4', panels)

    report = {'frames': len(rainy), 'size': f'{rainy.shape[2]}x{rainy.shape[1]}', 'device': derainer.device,
              'latency_ms_p50': float(np.percentile(latency[1:] or latency, 50)),
              'latency_ms_p99': float(np.percentile(latency[1:] or latency, 99)),
              'fps': 1000.0 / float(np.mean(latency[1:] or latency)), 'resets': derainer.counters['resets']}
    if clean is not None:
        median = temporal_median(rainy, 5)
        for name, clip in (('rainy', rainy), ('median5', median), ('derained', derained_arr)):
            scores = clip_metrics(clip, clean)
            report[f'psnr_{name}'], report[f'ssim_{name}'] = scores['psnr'], scores['ssim']
    report['seconds'] = time.perf_counter() - t0
    (out_dir / 'metrics.json').write_text(json.dumps(report, indent=2))
    lines = ['| | PSNR (dB) | SSIM |', '|---|---|---|']
    if clean is not None:
        for name in ('rainy', 'median5', 'derained'):
            lines.append(f"| {name} | {report[f'psnr_{name}']:.2f} | {report[f'ssim_{name}']:.4f} |")
    (out_dir / 'metrics.md').write_text('\n'.join(lines) + '\n' + (
        f"\nlatency p50 {report['latency_ms_p50']:.1f} ms, p99 {report['latency_ms_p99']:.1f} ms, "
        f"{report['fps']:.1f} frames/s on {report['device']}\n"))
    print('[demo] ---------------------------------------------------------------')
    if clean is not None:
        print('\n'.join('[demo] ' + ln for ln in lines))
    print(f"[demo] streaming: {report['fps']:.1f} frames/s, latency p50 {report['latency_ms_p50']:.1f} ms "
          f"p99 {report['latency_ms_p99']:.1f} ms on {report['device']}")
    print(f'[demo] wrote {out_dir}/frames/*.png, side_by_side.png' + (', side_by_side.mp4' if mp4 else '')
          + ', metrics.md, metrics.json')
    for stage in stages:
        stage(args, rainy, out_dir)
    print(f"[demo] done in {time.perf_counter() - t0:.1f} s")
    return 0

