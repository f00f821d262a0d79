"""``rainmamba eval``: score a model and the baselines (rainy input, 5-frame temporal median)
on a dataset or on held-out synthetic clips, and write a Markdown/JSON report with images.

Examples::

    rainmamba eval --model default --data synthetic --held-out --out runs/eval_synth
    rainmamba eval --model ckpt.pt --data ../shared/data/nturain_a2 --out runs/eval_ntu
    rainmamba eval --model default --data ../shared/data/real_rain_yard/rain --streaming --out runs/yard
    rainmamba eval --suite generalisation --model new.pt --reference default --out runs/suite
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

SHARED_CLEAN = ('camvid/images', 'carla_clean')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', default='default',
                        help="checkpoint path, or 'default' for the bundled model, or 'none' for "
                             'baselines only')
    parser.add_argument('--data', default='synthetic',
                        help="dataset folder (lq/gt, *_Rain/*_GT, rainy/clean or rainy frames) or "
                             "'synthetic'")
    parser.add_argument('--out', required=True, help='report folder')
    parser.add_argument('--streaming', action='store_true',
                        help='run the model frame by frame through the Derainer (default: whole-clip '
                             'forward)')
    parser.add_argument('--flip-ensemble', action='store_true',
                        help="score the model with the flip ensemble (the Derainer's flip_ensemble: "
                             'each clip also derained mirrored left to right, the two averaged); '
                             'with --suite, every model gets a second column with it beside its own')
    parser.add_argument('--max-frames', type=int, default=None, help='frames per clip at most')
    parser.add_argument('--held-out', action='store_true',
                        help='synthetic: only held-out scenes and seeds (never trained on)')
    parser.add_argument('--clean-roots', nargs='*', default=None,
                        help='synthetic: folders of clean stills (default: ../shared/data CamVid + '
                             'CARLA when present, else built-in scenes)')
    parser.add_argument('--clips', type=int, default=12, help='synthetic: number of clips')
    parser.add_argument('--frames', type=int, default=8, help='synthetic: frames per clip')
    parser.add_argument('--size', type=int, nargs=2, default=(256, 320), metavar=('H', 'W'),
                        help='synthetic: clip size')
    parser.add_argument('--seed', type=int, default=0, help='synthetic: seed')
    parser.add_argument('--presets', nargs='*', default=['light', 'moderate', 'heavy', 'storm'])
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda'")
    parser.add_argument('--lpips-weights', default=None,
                        help="LPIPS: the lpips package's weights/v0.1/vgg.pth (with --vgg16)")
    parser.add_argument('--vgg16', default=None, help="LPIPS: torchvision's vgg16-397923af.pth")
    parser.add_argument('--samples', type=int, default=3, help='clips shown as side-by-side images')
    parser.add_argument('--no-baselines', action='store_true', help='skip the baselines')
    suite = parser.add_argument_group('generalisation suite (--suite generalisation)')
    suite.add_argument('--suite', choices=['generalisation'], default=None,
                       help='run the generalisation suite instead of --data: NTURain a2, the '
                            'pedestrian pair, held-out real videos with every rain preset (also at '
                            'frame stride 4) beside a rain oracle (every rain pixel given back as it '
                            'was before the camera\'s JPEG), clean clips (do no harm, ghosting), '
                            'brightness, streamed vs per-frame, real rain images; writes suite.md/json')
    suite.add_argument('--reference', action='append', default=[],
                       help="suite: another model scored side by side (path or 'default'); repeatable")
    suite.add_argument('--shared-data', default=None,
                       help='suite: the shared data folder (default: ../shared/data beside the checkout)')
    suite.add_argument('--suite-frames', type=int, default=8, help='suite: frames per held-out video clip')
    suite.add_argument('--suite-size', type=int, nargs=2, default=(180, 320), metavar=('H', 'W'),
                       help='suite: held-out video clip size')


def _shared_data() -> Path:
    return Path(__file__).resolve().parents[2].parent / 'shared' / 'data'


def _shared_clean_roots() -> list[str]:
    base = _shared_data()
    roots = [str(base / r) for r in SHARED_CLEAN if (base / r).is_dir()]
    return roots


def _device(name: str) -> str:
    import torch
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return name


def build_model_fn(model: str, streaming: bool, device: str, flip_ensemble: bool = False):
    """The model's clip function and a label, or (None, None) for 'none'."""
    from .evaluate import derainer_clip_fn, flip_ensemble_clip_fn, torch_clip_fn
    if model in ('none', ''):
        return None, None
    path = None if model == 'default' else model
    flip = '_flip_ensemble' if flip_ensemble else ''
    if streaming:
        from rainmamba_core.streaming.derainer import Derainer
        derainer = Derainer(model_path=path, mode='streaming', device=device, flip_ensemble=flip_ensemble)
        return derainer_clip_fn(derainer), 'model_streaming' + flip
    from rainmamba_core.models.rainmamba import RainMamba, load_default_model
    net = load_default_model() if path is None else RainMamba.from_checkpoint(path)
    fn = torch_clip_fn(net, device)
    return (flip_ensemble_clip_fn(fn) if flip_ensemble else fn), 'model' + flip


def run_suite_verb(args: argparse.Namespace, device: str) -> int:
    from .evaluate import EvalError, flip_ensemble_clip_fn
    from .suite import SuiteOptions, run_suite, write_suite_report
    shared = Path(args.shared_data) if args.shared_data else _shared_data()
    if not shared.is_dir():
        raise EvalError(f'--suite generalisation: the shared data folder {shared} does not exist; '
                        'give --shared-data (the folder holding nturain_a2, clean_video_* ...)')
    models = {}
    for spec in [args.model] + list(args.reference):
        fn, _ = build_model_fn(spec, False, device)
        if fn is None:
            raise EvalError(f'--suite needs a model, got --model {spec!r}')
        label = 'bundled default' if spec == 'default' else Path(spec).stem
        while label in models:
            label += "'"
        models[label] = fn
        if args.flip_ensemble:
            models[label + ' + flip ensemble'] = flip_ensemble_clip_fn(fn)
    opts = SuiteOptions(shared_data=shared, frames=args.suite_frames, size=tuple(args.suite_size),
                        seed=args.seed)
    t0 = time.time()
    results = run_suite(models, opts)
    meta = {'models': ', '.join(f'{k} ({v})' for k, v in zip(models, [args.model] + list(args.reference))),
            'mode': 'whole-clip causal forward (= streaming with the carried state)',
            'device': device, 'wall time (s)': round(time.time() - t0, 1)}
    paths = write_suite_report(results, args.out, meta=meta)
    print(paths['markdown'].read_text())
    print(f'report: {paths["markdown"]}')
    return 0


def run(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, folder_clips, synthetic_clips
    from .metrics import LPIPS
    from .report import preset_groups, write_report
    device = _device(args.device)
    if args.suite:
        return run_suite_verb(args, device)
    model_fn, label = build_model_fn(args.model, args.streaming, device, args.flip_ensemble)
    if args.data == 'synthetic':
        roots = args.clean_roots if args.clean_roots is not None else _shared_clean_roots()
        if not roots:
            log.warning('no clean frames found (../shared/data absent, no --clean-roots): using '
                        'built-in procedural scenes')
        clips = synthetic_clips(roots, args.clips, args.max_frames or args.frames, tuple(args.size),
                                args.seed, args.held_out, tuple(args.presets))
        data_desc = (f'synthetic ({"held-out " if args.held_out else ""}scenes from '
                     f'{", ".join(roots) or "built-in scenes"}; presets {", ".join(args.presets)}; '
                     f'seed {args.seed})')
    else:
        clips = folder_clips(args.data, args.max_frames)
        data_desc = args.data
    lpips_fn = None
    lpips_note = 'n/a (give --lpips-weights and --vgg16 local files)'
    if args.lpips_weights or args.vgg16:
        lpips_fn = LPIPS(args.lpips_weights, args.vgg16, device)
        lpips_note = 'LPIPS-VGG v0.1'
    t0 = time.time()
    results = evaluate(model_fn, clips, baselines=not args.no_baselines, lpips_fn=lpips_fn,
                       samples=args.samples, model_name=label or 'model', progress=True)
    if lpips_fn is None:
        results['lpips'] = lpips_note
    mode = 'streaming (Derainer)' if args.streaming else 'whole clip'
    meta = {'model': args.model, 'mode': mode + (', flip ensemble' if args.flip_ensemble else ''),
            'data': data_desc, 'device': device, 'wall time (s)': round(time.time() - t0, 1)}
    paths = write_report(results, args.out, meta=meta)
    for m, r in results['methods'].items():
        s = r['summary']
        if s:
            print(f'{m:20s} PSNR {s["psnr"]:6.2f} dB  SSIM {s["ssim"]:.4f}  tMAD {s["tmad"]:.2f}')
    groups = preset_groups(results)
    for preset, g in groups.items():
        cells = '  '.join(f'{m} {v["psnr"]:6.2f}' for m, v in g.items())
        print(f'  {preset:9s} ({next(iter(g.values()))["clips"]:2d} clips)  {cells}')
    print(f'report: {paths["markdown"]}')
    return 0
