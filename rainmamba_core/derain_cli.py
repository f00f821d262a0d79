"""`rainmamba derain`: derain a video, a frame folder or an image offline.

Causal models stream frame by frame (constant memory, any length). Official models run the
authors' test procedure: temporal windows and spatial tiles per dataset preset (--preset).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('input', help='video file, folder of numbered frames, or image')
    parser.add_argument('output', type=Path, help='output folder (frames) or .mp4 file')
    parser.add_argument('--model', default=None, help='checkpoint or .onnx (default: bundled tiny model)')
    parser.add_argument('--mode', choices=('streaming', 'windowed', 'tiled'), default=None,
                        help='default: streaming for causal models, tiled for official ones')
    parser.add_argument('--preset', default='full',
                        help='tiled mode: VRDS | LWDDS | RainVIDSS | RainSynAll100 | full (default full)')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda')
    parser.add_argument('--max-frames', type=int, default=None, help='stop after N frames')
    parser.add_argument('--fps', type=float, default=10.0, help='frame rate of an .mp4 output')


def _write(output: Path, frames: list[np.ndarray], fps: float) -> None:
    from rainmamba_core.data.clips import write_image, write_mp4
    if output.suffix.lower() in ('.mp4', '.avi', '.mkv'):
        if not write_mp4(output, frames, fps):
            raise RuntimeError(f'OpenCV could not open a video writer for {output}')
        return
    for i, f in enumerate(frames):
        write_image(output / f'{i:05d}.png', f)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rainmamba_core.data.clips import ClipError, load_clip
    try:
        clip = load_clip(args.input, frames=args.max_frames)
    except ClipError as exc:
        print(f'rainmamba derain: {exc}')
        return 2
    t0 = time.perf_counter()
    mode = args.mode
    if mode == 'tiled' or (mode is None and args.model and not str(args.model).endswith('.onnx')):
        import torch

        from rainmamba_core.models.rainmamba import RainMamba
        from rainmamba_core.streaming.offline import derain_video
        model = RainMamba.from_checkpoint(args.model) if args.model else None
        if model is not None and (mode == 'tiled' or not model.config.causal):
            dev = 'cuda' if args.device in ('auto', 'cuda') and torch.cuda.is_available() else 'cpu'
            model = model.to(dev).eval()
            video = torch.from_numpy(clip).permute(0, 3, 1, 2).float().div(255)[None]
            bar = tqdm(desc='windows', unit='window')
            out = derain_video(model, video, args.preset,
                               progress=lambda done, total: (setattr(bar, 'total', total), bar.update(1)))
            bar.close()
            frames = list((out[0].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
            _write(args.output, frames, args.fps)
            print(f'rainmamba derain: {len(frames)} frames (tiled, preset {args.preset}) -> {args.output} '
                  f'in {time.perf_counter() - t0:.1f} s')
            return 0
        mode = mode if mode != 'tiled' else 'streaming'
    from rainmamba_core.streaming.derainer import Derainer
    derainer = Derainer(args.model, mode=mode or 'streaming', device=args.device)
    frames = [derainer.process('input', f) for f in tqdm(clip, desc='derain', unit='frame')]
    _write(args.output, frames, args.fps)
    dt = time.perf_counter() - t0
    print(f'rainmamba derain: {len(frames)} frames ({mode or "streaming"}) -> {args.output} in {dt:.1f} s '
          f'({len(frames) / dt:.2f} frames/s)')
    return 0
