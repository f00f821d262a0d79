"""``rainmamba synth``: make a synthetic rainy clip from clean frames.

Writes ``OUT/rainy/%05d.png`` and ``OUT/clean/%05d.png`` (a pair ``rainmamba eval --data OUT``
reads), plus ``OUT/mask`` and ``OUT/streaks`` (8-bit) and ``OUT/rain.json`` (the parameters).

Examples::

    rainmamba synth --input builtin --out /tmp/rain --preset heavy --frames 16 --seed 1
    rainmamba synth --input ../shared/data/camvid/images/0001TP_008550.png --out /tmp/rain
    rainmamba synth --input clip.mp4 --out /tmp/rain --frames 50
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--input', default='builtin',
                        help="clean source: a frame folder, a video, a still image (the camera moves "
                             "over it) or 'builtin'")
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--preset', default='heavy', help='drizzle, light, moderate, heavy or storm')
    parser.add_argument('--frames', type=int, default=16, help='frames (folder/video: at most)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the rain and the camera motion')
    parser.add_argument('--size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='output size (default: the source size; builtin 240x320)')
    parser.add_argument('--no-layers', action='store_true', help='do not write mask/ and streaks/')


def run(args: argparse.Namespace) -> int:
    from .clips import load_clip, write_image
    from .synthetic_rain import RainGenerator, RainParams
    clean = load_clip(args.input, args.frames, tuple(args.size) if args.size else None, args.seed)
    params = RainParams.preset(args.preset)
    rain = RainGenerator(params, args.seed).render_clip(clean)
    out = Path(args.out)
    for t in range(len(clean)):
        write_image(out / 'rainy' / f'{t:05d}.png', rain.rainy[t])
        write_image(out / 'clean' / f'{t:05d}.png', rain.clean[t])
        if not args.no_layers:
            for name, layer in (('mask', rain.mask[t]), ('streaks', rain.streaks[t])):
                grey = (np.clip(layer, 0, 1) * 255 + 0.5).astype(np.uint8)
                write_image(out / name / f'{t:05d}.png', np.repeat(grey[..., None], 3, axis=2))
    info = {'input': str(args.input), 'preset': args.preset, 'seed': args.seed,
            'frames': int(len(clean)), 'size': list(clean.shape[1:3]),
            'params': dataclasses.asdict(rain.params)}
    (out / 'rain.json').write_text(json.dumps(info, indent=2))
    psnr = 10 * np.log10(255.0 ** 2 / max(np.mean((rain.rainy.astype(float) - clean) ** 2), 1e-12))
    print(f'wrote {len(clean)} frames of {clean.shape[2]}x{clean.shape[1]} to {out} '
          f'(preset {args.preset}, rainy-vs-clean PSNR {psnr:.2f} dB)')
    return 0
