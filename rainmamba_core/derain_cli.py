"""`rainmamba derain`: derain a video, a frame folder or an image offline.

Causal models stream frame by frame from disk to disk: one frame is read, derained and written
before the next is read, so memory stays constant for a clip of any length. Output frames keep
the input's names (`00001.jpg` -> `00001.png`, lossless), so they line up with ground truth named
the same way; frames of a video are numbered from 00000. Official models run the authors' test
procedure, which needs the whole clip: temporal windows and spatial tiles per dataset preset
(--preset).
"""
from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rainmamba_core.options import add_derainer_arguments, derainer_kwargs, options_from_args

VIDEO_OUT = ('.mp4', '.avi', '.mkv')
# streaming.offline.PRESETS, named here so `--help` needs no torch import (a test holds them equal).
PRESET_NAMES = ('VRDS', 'LWDDS', 'RainVIDSS', 'RainSynAll100', 'full')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('input', help="video file, folder of numbered frames, image, or 'builtin'")
    parser.add_argument('output', type=Path,
                        help='output folder (frames, named as the input frames) or .mp4 file')
    model = parser.add_argument_group('model (passed to the Derainer; the options table of rainmamba_core.options)')
    add_derainer_arguments(model, overrides={'mode': {
        'choices': ('streaming', 'windowed', 'tiled'), 'default': None,
        'help': "streaming (causal, per frame), windowed (the paper's sliding window) or tiled (the authors' "
                'test procedure: windows and tiles over the whole clip); default: streaming for causal '
                'models, tiled for official ones'}})
    parser.add_argument('--preset', default='full', choices=sorted(PRESET_NAMES),
                        help='tiled mode: VRDS | LWDDS | RainVIDSS | RainSynAll100 | full (default full)')
    parser.add_argument('--max-frames', type=int, default=None, help='stop after N frames')
    parser.add_argument('--fps', type=float, default=10.0, help='frame rate of an .mp4 output')


def source_frames(source: str, max_frames: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, (H, W, 3) uint8 RGB frame) pairs, read one at a time.

    name: the file's stem for a folder of frames or an image, a 5-digit index for a video or
    'builtin'.

    Raises:
        ClipError: a missing source, an empty folder, a video OpenCV cannot open.
    """
    import cv2

    from rainmamba_core.data.clips import IMAGE_EXTS, ClipError, list_images, load_clip, read_image
    path = Path(source)
    limit = max_frames if max_frames is not None else -1
    if str(source) == 'builtin':
        for i, frame in enumerate(load_clip('builtin', frames=max_frames)):
            yield f'{i:05d}', frame
        return
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise ClipError(f'{path}: no images ({", ".join(IMAGE_EXTS)}) found')
        stems = [f.stem for f in files]
        if len(set(stems)) != len(stems):
            twice = sorted({s for s in stems if stems.count(s) > 1})
            raise ClipError(f'{path}: frames {twice[:3]} exist under two extensions; the output is '
                            'named after the input stem, so keep one file per frame')
        for f in files[:limit] if limit >= 0 else files:
            yield f.stem, read_image(f)
        return
    if not path.exists():
        raise ClipError(f"{path}: no such file or folder; give a frame folder, a video, an image or 'builtin'")
    if path.suffix.lower() in IMAGE_EXTS:
        yield path.stem, read_image(path)
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ClipError(f'{path}: OpenCV cannot open this video (missing file or codec)')
    try:
        index = 0
        while index != limit:
            ok, frame = cap.read()
            if not ok:
                break
            yield f'{index:05d}', cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise ClipError(f'{path}: no frames decoded')


class FrameSink:
    """Writes derained frames as they come: named PNGs in a folder, or one video file."""

    def __init__(self, output: Path, fps: float) -> None:
        self.output, self.fps = output, fps
        self.video = output.suffix.lower() in VIDEO_OUT
        self._writer = None
        self.count = 0

    def write(self, name: str, frame: np.ndarray) -> None:
        import cv2

        from rainmamba_core.data.clips import ClipError, write_image
        if not self.video:
            write_image(self.output / f'{name}.png', frame)
        else:
            if self._writer is None:
                self.output.parent.mkdir(parents=True, exist_ok=True)
                h, w = frame.shape[:2]
                self._writer = cv2.VideoWriter(str(self.output), cv2.VideoWriter_fourcc(*'mp4v'),
                                               self.fps, (w, h))
                if not self._writer.isOpened():
                    raise ClipError(f'{self.output}: OpenCV could not open a video writer; give a '
                                    'folder (named frames) or an .mp4/.avi/.mkv file')
            self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rainmamba_core.data.clips import ClipError
    t0 = time.perf_counter()
    mode = args.mode
    options = options_from_args(args, unchecked=('mode',))  # a refused combination: before any work
    model_path = options['model_path'] or None
    frames = source_frames(args.input, args.max_frames)
    first = next(frames, None)  # a bad input is refused here, before a model is loaded
    if first is None:
        raise ClipError(f'{args.input}: no frames to derain')
    frames = itertools.chain([first], frames)
    sink = FrameSink(args.output, args.fps)
    try:
        if mode == 'tiled' or (mode is None and model_path and not str(model_path).endswith('.onnx')):
            import torch

            from rainmamba_core.devices import resolve_device
            from rainmamba_core.models.config import RUN_TIME_KEYS, with_run_time
            from rainmamba_core.models.rainmamba import RainMamba
            from rainmamba_core.streaming.offline import derain_video
            model = RainMamba.from_checkpoint(model_path) if model_path else None
            kw = derainer_kwargs(options)
            run_time = {key: kw[key] for key in RUN_TIME_KEYS if kw.get(key) is not None}
            if model is not None and run_time:
                model.config = with_run_time(model.config, run_time)
            if model is not None and (mode == 'tiled' or not model.config.causal):
                # The authors' windows and tiles see the whole clip: it is loaded at once.
                names, loaded = zip(*frames)
                clip = np.stack(loaded)
                model = model.to(resolve_device(options['device'])).eval()
                video = torch.from_numpy(clip).permute(0, 3, 1, 2).float().div(255)[None]
                bar = tqdm(desc='windows', unit='window')
                out = derain_video(model, video, args.preset,
                                   progress=lambda done, total: (setattr(bar, 'total', total), bar.update(1)))
                bar.close()
                for name, frame in zip(names, (out[0].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()):
                    sink.write(name, frame)
                print(f'rainmamba derain: {sink.count} frames (tiled, preset {args.preset}) -> {args.output} '
                      f'in {time.perf_counter() - t0:.1f} s')
                return 0
            mode = mode if mode != 'tiled' else 'streaming'
        from rainmamba_core.streaming.derainer import Derainer
        derainer = Derainer(**dict(derainer_kwargs(options), mode=mode or 'streaming'))
        # Disk to disk: read, derain, write one frame at a time.
        for name, frame in tqdm(frames, desc='derain', unit='frame'):
            sink.write(name, derainer.process('input', frame))
    finally:
        sink.close()
    dt = time.perf_counter() - t0
    print(f'rainmamba derain: {sink.count} frames ({mode or "streaming"}) -> {args.output} in {dt:.1f} s '
          f'({sink.count / dt:.2f} frames/s)')
    return 0
