"""Evaluation runner shared by ``rainmamba eval``, the trainer and the demo.

``evaluate(model_fn, clips)`` scores a clip function and the baselines on (name, rainy, gt)
clips and returns a JSON-ready dict (plus ``_samples`` arrays for the report's images).
Clip functions map (T, H, W, 3) uint8 RGB -> (T, H, W, 3) (uint8, or float in [0, 1]).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rainmamba_core.errors import RainMambaError

from .baselines import BASELINES
from .metrics import clip_metrics, to_uint8

log = logging.getLogger(__name__)

ClipFn = Callable[[np.ndarray], np.ndarray]
# (name, rainy (T, H, W, 3) uint8, gt (T, H, W, 3) uint8 or None when there is no ground truth)
Clip = tuple[str, np.ndarray, 'np.ndarray | None']


class EvalError(RainMambaError, ValueError):
    """Evaluation data or model output is unusable (missing folders, shape mismatch)."""


def torch_clip_fn(model: torch.nn.Module, device: str | torch.device = 'cpu') -> ClipFn:
    """Whole-clip forward of a model mapping (B, T, 3, H, W) [0, 1] -> same shape."""
    model = model.to(device).eval()

    @torch.no_grad()
    def run(clip: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(clip).to(device).float().div(255.0).permute(0, 3, 1, 2)[None]
        return to_uint8(model(x)[0])
    return run


def derainer_clip_fn(derainer: Any) -> ClipFn:
    """Frame-by-frame streaming through a ``Derainer`` (one fresh stream per clip)."""
    counter = iter(range(1 << 62))

    def run(clip: np.ndarray) -> np.ndarray:
        sid = f'eval{next(counter)}'
        out = np.stack([derainer.process(sid, frame) for frame in clip])
        derainer.reset(sid)
        return out
    return run


def flip_ensemble_clip_fn(fn: ClipFn) -> ClipFn:
    """`fn` with the Derainer's flip ensemble (`flip_ensemble=True`): the clip is also run mirrored
    left to right, as a clip of its own, and the two outputs are averaged (`mean_with_mirror`)."""
    from rainmamba_core.streaming.derainer import mean_with_mirror

    def run(clip: np.ndarray) -> np.ndarray:
        direct = to_uint8(fn(clip))
        mirrored = to_uint8(fn(np.ascontiguousarray(clip[:, :, ::-1])))
        return mean_with_mirror(direct, mirrored)
    return run


def _summary(per_seq: dict[str, dict[str, Any]]) -> dict[str, float]:
    keys = ('psnr', 'ssim', 'tmad', 'lpips')
    out = {}
    for k in keys:
        vals = [v[k] for v in per_seq.values() if k in v and not math.isnan(v[k])]
        if vals:
            out[k] = float(np.mean(vals))
    return out


def evaluate(model_fn: ClipFn | None, clips: Iterable[Clip], baselines: bool = True,
             lpips_fn: Callable[[np.ndarray, np.ndarray], float] | None = None,
             samples: int = 3, model_name: str = 'model', progress: bool = False) -> dict[str, Any]:
    """Score a model and the baselines on clips.

    Args:
        model_fn: clip function of the model (None: baselines only).
        clips: (name, rainy, gt) triples; gt may be None (then only outputs are kept).
        baselines: also score the rainy input and the 5-frame temporal median.
        lpips_fn: (H, W, 3) uint8 pair -> LPIPS, or None (reported as n/a).
        samples: how many clips keep their middle frame for the report's side-by-side images.
        progress: show a tqdm bar.

    Returns:
        ``{'methods': {name: {'summary': {psnr, ssim, tmad[, lpips]}, 'sequences': {...}}},
        'clips': n, 'frames': n, 'has_gt': bool, '_samples': [...]}``; metrics are means over
        frames, then over sequences (the authors' convention).
    """
    fns: dict[str, ClipFn] = {}
    if model_fn is not None:
        fns[model_name] = model_fn
    if baselines:
        fns.update(BASELINES)
    per: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in fns}
    kept: list[dict[str, Any]] = []
    n_clips = n_frames = 0
    has_gt = True
    it: Iterable[Clip] = clips
    if progress:
        from tqdm import tqdm
        it = tqdm(clips, desc='eval', unit='clip')
    for name, rainy, gt in it:
        n_clips += 1
        n_frames += len(rainy)
        outputs = {}
        for m, fn in fns.items():
            out = to_uint8(np.asarray(fn(rainy)))
            if out.shape != rainy.shape:
                raise EvalError(f'{m} returned {out.shape} for clip {name} of shape {rainy.shape}')
            outputs[m] = out
            if gt is not None:
                per[m][name] = clip_metrics(out, gt, lpips_fn)
        has_gt = has_gt and gt is not None
        if len(kept) < samples:
            t = len(rainy) - 1  # the last frame: causal models have seen the most history there
            kept.append({'name': name, 'frame': t, 'rainy': rainy[t], 'gt': None if gt is None else gt[t],
                         'outputs': {m: o[t] for m, o in outputs.items()}})
    if n_clips == 0:
        raise EvalError('no clips to evaluate')
    methods = {m: {'summary': _summary(per[m]) if has_gt else {}, 'sequences': per[m]} for m in fns}
    return {'methods': methods, 'clips': n_clips, 'frames': n_frames, 'has_gt': has_gt,
            'lpips': 'computed' if lpips_fn is not None else 'n/a', '_samples': kept}


# --------------------------------------------------------------------------------------------
# Clip sources


def folder_clips(root: str | Path, max_frames: int | None = None) -> Iterator[Clip]:
    """Clips from a folder: the authors' layout (lq/ and gt/ of sequence folders), a pair of
    ``*_Rain`` / ``*_GT`` (NTURain), ``rainy`` / ``clean`` (``rainmamba synth``) or ``rain`` / ``gt``
    frame folders,
    or a plain folder of rainy frames (no ground truth)."""
    from rainmamba_core.data.clips import list_images, load_frame_folder
    from rainmamba_core.data.datasets import find_sequences, read_image
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f'{root}: not a folder; give a dataset folder or "synthetic"')
    pairs: list[tuple[Path, Path]] = []
    for lq_name, gt_name in (('lq', 'gt'), ('rainy', 'clean'), ('input', 'target'), ('rain', 'gt')):
        if (root / lq_name).is_dir() and (root / gt_name).is_dir():
            pairs.append((root / lq_name, root / gt_name))
            break
    if not pairs:
        for d in sorted(root.iterdir()):
            for a, b in (('_Rain', '_GT'), ('_rain', '_gt')):
                if d.is_dir() and d.name.endswith(a) and (root / (d.name[:-len(a)] + b)).is_dir():
                    pairs.append((d, root / (d.name[:-len(a)] + b)))
    if pairs:
        for lq_root, gt_root in pairs:
            for name, lq_files, gt_files in find_sequences(lq_root, gt_root):
                lq_files, gt_files = lq_files[:max_frames], gt_files[:max_frames]
                yield (name, np.stack([read_image(p) for p in lq_files]),
                       np.stack([read_image(p) for p in gt_files]))
        return
    if list_images(root):
        yield root.name, load_frame_folder(root, max_frames), None
        return
    subs = [d for d in sorted(root.iterdir()) if d.is_dir() and list_images(d)]
    if not subs:
        raise EvalError(f'{root}: found neither lq/gt, *_Rain/*_GT, rainy/clean folders nor frames')
    for d in subs:
        yield d.name, load_frame_folder(d, max_frames), None


def synthetic_clips(clean_roots: list[str] | None, clips: int, frames: int,
                    size: tuple[int, int] = (256, 320), seed: int = 0, heldout: bool = True,
                    presets: tuple[str, ...] = ('light', 'moderate', 'heavy', 'storm')) -> Iterator[Clip]:
    """Deterministic synthetic evaluation clips (held-out scenes and seeds by default).

    With ``clean_roots`` empty or None, built-in procedural scenes are used (seeds far from any
    a trainer would use on them).
    """
    from rainmamba_core.data.clips import builtin_clip
    from rainmamba_core.data.datasets import SyntheticRainDataset
    from rainmamba_core.data.synthetic_rain import RainGenerator, RainParams
    if clean_roots:
        ds = SyntheticRainDataset(clean_roots, frames=frames, crop=None, size=size, train=False,
                                  presets=presets, split='heldout' if heldout else 'all', seed=seed,
                                  length=clips, fov=(0.6, 0.9))
        for i in range(len(ds)):
            item = ds[i]
            yield (item['key'].replace('/', '_'), to_uint8(item['lq']), to_uint8(item['gt']))
        return
    for i in range(clips):
        s = 1_000_003 * (seed + 1) + i + (10 ** 9 if heldout else 0)
        clean = builtin_clip(frames, size[0], size[1], seed=s)
        preset = presets[i % len(presets)]
        rain = RainGenerator(RainParams.preset(preset), s).render_clip(clean)
        yield f'builtin{i}_{preset}', rain.rainy, rain.clean
