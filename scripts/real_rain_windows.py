#!/usr/bin/env python3
"""Real rain over all of real_rain_yard, and NTURain a2, for models side by side (the model card's
50-frame tables).

    python scripts/real_rain_windows.py default runs/x/model_final.pt [--shared-data DIR] [--json F]
    python scripts/real_rain_windows.py default blend30.pt --rainy-frames /data/my_robot/rainy_frames

Every frame of ``real_rain_yard/rain`` is streamed in windows of 12 frames (the last window takes
the remainder), each from a fresh state. Printed per model: the NTURain a2 gain over the rainy
input (dB), the thin bright lines left per window and their mean (% of the input's,
``eval.suite.thin_line_energy``), those lines split by ``eval.suite.real_rain_masks`` over the
whole clip into rain lines left and scene lines kept (%) (and per window: a model fine-tuned on
the yard's first 36 frames, ``data.options.real_holdout=14``, is judged on the last), and the
harm done to a2's *clean* frames (streamed; output against input, mean and worst frame, dB): a
sharp, upright scene (palm trunks, mullions, fountain jets) the training videos do not have.
About 35 s per model on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='+', help="model files, or 'default' for the bundled model")
    parser.add_argument('--shared-data', type=Path, default=Path(__file__).resolve().parents[2] / 'shared' / 'data',
                        help='the shared data folder (default: ../shared/data beside the checkout)')
    parser.add_argument('--rainy-frames', type=Path, default=None,
                        help='a folder of consecutive real rainy frames to judge instead of real_rain_yard '
                             '(your own camera: hold out its last frames when you fine-tune on it)')
    parser.add_argument('--window', type=int, default=12, help='frames per streamed window (default 12)')
    parser.add_argument('--json', type=Path, default=None, help='also write the numbers to this JSON file')
    args = parser.parse_args(argv)
    yard_dir = args.rainy_frames or args.shared_data / 'real_rain_yard' / 'rain'
    a2_dir = args.shared_data / 'nturain_a2'
    for d in (yard_dir, a2_dir):
        if not d.is_dir():
            parser.error(f'{d} is missing: give --shared-data (the folder holding real_rain_yard/ and nturain_a2/)')

    import torch

    from rainmamba_core.eval.evaluate import folder_clips, torch_clip_fn
    from rainmamba_core.eval.metrics import psnr, to_uint8
    from rainmamba_core.eval.suite import frame_psnrs, rain_scene_shares, real_rain_masks, thin_line_energy
    from rainmamba_core.models.rainmamba import RainMamba, load_default_model
    torch.set_num_threads(2)
    yard = next(iter(folder_clips(yard_dir)))[1]
    _, a2_rainy, a2_clean = next(iter(folder_clips(a2_dir)))
    starts = list(range(0, max(len(yard) - args.window, 0) + 1, args.window))
    windows = [(a, b) for a, b in zip(starts, starts[1:] + [len(yard)])]
    masks = real_rain_masks(yard)
    a2_input = float(np.mean([psnr(r, c) for r, c in zip(a2_rainy, a2_clean)]))
    results = {}
    for spec in args.models:
        model = load_default_model() if spec == 'default' else RainMamba.from_checkpoint(spec)
        run = torch_clip_fn(model.eval())
        a2_out = to_uint8(np.asarray(run(a2_rainy)))
        gain = float(np.mean([psnr(o, c) for o, c in zip(a2_out, a2_clean)])) - a2_input
        kept = frame_psnrs(to_uint8(np.asarray(run(a2_clean))), a2_clean)  # as the suite's row
        out = np.concatenate([to_uint8(np.asarray(run(yard[a:b]))) for a, b in windows])
        left = [100 * thin_line_energy(out[a:b]) / thin_line_energy(yard[a:b]) for a, b in windows]
        shares = rain_scene_shares([masks], [out])
        rain_left, scene_kept = shares['rain lines left'], shares['scene lines kept']
        # per window too: a model fine-tuned on the yard's first frames is judged on the last window
        split = [rain_scene_shares([tuple(m[a:b] for m in masks)], [out[a:b]]) for a, b in windows]
        results[spec] = {'a2_gain_db': gain, 'lines_left_windows': left, 'lines_left_mean': float(np.mean(left)),
                         'rain_lines_left': rain_left, 'scene_lines_kept': scene_kept,
                         'rain_lines_left_windows': [d['rain lines left'] for d in split],
                         'scene_lines_kept_windows': [d['scene lines kept'] for d in split],
                         'a2_clean_kept_db': float(np.mean(kept)), 'a2_clean_kept_worst_db': float(min(kept))}
        print(f'{spec}: a2 {gain:+.2f} dB | lines left ' + ' / '.join(f'{v:.1f}' for v in left)
              + f' (mean {np.mean(left):.1f} %) | rain lines left {rain_left:.1f} % | '
              f'scene lines kept {scene_kept:.1f} % | a2 clean kept {np.mean(kept):.2f} dB '
              f'(worst {min(kept):.2f})', flush=True)
        print('    per window, rain lines left / scene lines kept: '
              + ' | '.join(f'{a + 1}-{b}: {d["rain lines left"]:.1f} / {d["scene lines kept"]:.1f}'
                           for (a, b), d in zip(windows, split)), flush=True)
    if args.json:
        args.json.write_text(json.dumps({'windows': windows, 'models': results}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
