"""The generalisation suite: does a model derain rain and scenes it never saw, and do no harm?

``rainmamba eval --suite generalisation --out DIR [--model M] [--reference R]`` runs every set
below through each model (and the baselines) in one command and writes ``suite.md`` (the table),
``suite.json`` and side-by-side images (``images/``), real rain included:

==================  ==========================================================================
set                 what it asks
==================  ==========================================================================
nturain_a2          real video with NTURain's synthetic rain (9 frames, 640x480): gain over input
pedestrian          real greyscale video with light rain (24 frames; replicated to RGB): gain
video/<preset>      held-out real videos (never trained on) with this project's rain, one row
                    per preset: gain, and better than the temporal median?
video_stride4       the same clips with every 4th frame (frames the node skipped): gain
rain oracle         a reference column on the video rows: the input with every pixel the rain
                    changed put back as it was before the camera's JPEG step (a perfect rain
                    remover that does not know the codec). Where the camera compresses hard,
                    the target holds the codec's error around the rain, which no derainer sees:
                    then the oracle's gain is small or negative and the look's gain says more
                    about the codec than about the rain left
clean               held-out clean clips, 24 frames at stride 4 (fast motion), output vs input:
                    mean and worst frame (ghosting shows as a bad frame)
nturain_a2 clean    a2's 9 clean frames streamed, output vs input: do no harm on a sharp scene
                    full of upright thin structure (palm trunks, mullions, fountain jets, a
                    pool ladder) that the held-out videos do not have
brightness          mean |mean(output) - mean(clean)| per frame on the rainy video clips (0-255)
streamed-per_frame  PSNR of the carried-state output minus that of each frame run alone, on the
                    stride-4 clips (negative: the state hurts)
real_rain_yard      real heavy rain, no ground truth: images, and no-reference rows: the thin
                    bright near-vertical lines left (% of the input's; streaks are such lines,
                    but so are railings and edges, so 100 % = nothing removed and a perfect
                    derainer stays well above 0); the same lines split by `real_rain_masks`
                    into rain (there in one frame, not in the aligned neighbours: % left,
                    0 is perfect) and scene (there in the neighbours too: % kept, 100 is
                    perfect); and the mean absolute change (grey levels)
==================  ==========================================================================

Causal models are scored with their whole-clip forward, which equals frame-by-frame streaming
with the carried state (tested to rel. 1e-5), so "streamed" numbers are what the node delivers.
The sets are read from ``../shared/data`` (``--shared-data``); a missing set is skipped with a
note in the report, never silently.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import rainy_input, temporal_median
from .evaluate import Clip, ClipFn, EvalError, folder_clips
from .metrics import psnr, to_uint8

log = logging.getLogger(__name__)

SUITE_PRESETS = ('nturain', 'composite', 'sharp', 'drizzle', 'light', 'moderate', 'heavy', 'storm')
# the targets, shown beside the measurements (gain in dB unless said otherwise)
TARGETS = {'nturain_a2 gain': '>= +1.5 dB', 'pedestrian gain': '>= +1 dB',
           'video/': '>= +6 dB, > median', 'video all': '>= +6 dB, > median',
           'video_stride': '>= +5 dB', 'clean output vs input, mean': '>= 45 dB',
           'clean output vs input, worst': '>= 40 dB (no ghosting)',
           'nturain_a2 clean frames, output vs input, mean': '>= 45 dB',
           'brightness error, mean': '<= 1.5 grey levels', 'streamed minus': '>= 0 dB'}


def target_for(row: str) -> str:
    """The issue's target for a table row ('' when the row has none)."""
    keys = sorted((k for k in TARGETS if row.startswith(k)), key=len, reverse=True)
    return TARGETS[keys[0]] if keys else ''


@dataclass
class SuiteOptions:
    """What the suite runs (defaults keep it to a few minutes per model on a 2-core CPU)."""

    shared_data: Path                       # ../shared/data
    frames: int = 8                         # frames per held-out video clip
    size: tuple[int, int] = (180, 320)      # (h, w) of the held-out video clips
    stride: int = 4                         # the dropped-frames rows' frame stride
    presets: tuple[str, ...] = SUITE_PRESETS
    seed: int = 0
    real_frames: int = 12                   # real_rain_yard frames shown
    clean_frames: int = 24                  # frames of the clean (ghosting) clips: a longer stream


def per_frame_fn(fn: ClipFn) -> ClipFn:
    """The clip function run on each frame alone (no carried state)."""
    return lambda clip: np.concatenate([to_uint8(np.asarray(fn(clip[t:t + 1]))) for t in range(len(clip))])


def brightness_error(out: np.ndarray, gt: np.ndarray) -> list[float]:
    """Per frame |mean(out) - mean(gt)| in grey levels (0-255) of (T, H, W, 3) uint8 clips."""
    return [abs(float(o.astype(np.float64).mean()) - float(g.astype(np.float64).mean())) for o, g in zip(out, gt)]


def thin_line_energy(frames: np.ndarray, threshold: float = 10.0) -> float:
    """How much thin bright near-vertical line a (T, H, W, 3) uint8 clip shows (no reference).

    Each grey pixel minus the mean of the pixels two to the left and two to the right, above
    ``threshold`` grey levels (sensor noise and texture stay below it), summed. A rain streak one
    to three pixels wide falling near vertically scores; flat areas and horizontal edges do not;
    the vertical edges of bright objects score a little. Compare an output's value with its input's:
    the ratio is the share left.
    """
    return float(np.clip(line_map(frames) - threshold, 0.0, None).sum())


def line_map(frames: np.ndarray) -> np.ndarray:
    """Per pixel, how much brighter it is than the pixels two to its left and right (>= 0).

    (T, H, W, 3) uint8 -> (T, H, W - 4) float32: the quantity `thin_line_energy` sums.
    """
    g = frames.astype(np.float32).mean(-1)
    return np.clip(g[..., 2:-2] - 0.5 * (g[..., :-4] + g[..., 4:]), 0.0, None)


def _global_shift(frame: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(dx, dy) that moves ``other`` onto ``frame`` (sub-pixel phase correlation of the grey images)."""
    import cv2
    a = frame.astype(np.float32).mean(-1)
    b = other.astype(np.float32).mean(-1)
    (dx, dy), _ = cv2.phaseCorrelate(b, a, cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F))
    return dx, dy


def real_rain_masks(frames: np.ndarray, threshold: float = 10.0, neighbours: int = 2
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a rainy clip's thin bright lines into rain (transient) and scene (persistent) ones.

    Rain falls through a scene point in one frame and is gone in the next; a railing or a kerb is
    there in every frame. Each of the up to ``2 * neighbours`` frames around frame t is aligned to
    it by a global shift (phase correlation: hand-held pans), and the median of their `line_map`s
    is the scene's line strength at each pixel. A pixel is *rain* where frame t shows a line more
    than ``threshold`` above that and the scene has almost none (< threshold / 2), and *scene*
    where both frame t and the aligned neighbours show a line (> threshold).

    Returns:
        (line map of the clip (T, H, W - 4), rain mask, scene mask), the masks boolean, same shape.
    """
    import cv2
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 2 or frames.shape[-1] != 3:
        raise EvalError(f'real_rain_masks needs a (T >= 2, H, W, 3) clip, got shape {frames.shape}')
    lines = line_map(frames)
    scene = np.empty_like(lines)
    height, width = frames.shape[1:3]
    for t in range(len(frames)):
        maps = []
        for u in range(max(0, t - neighbours), min(len(frames), t + neighbours + 1)):
            if u == t:
                continue
            dx, dy = _global_shift(frames[t], frames[u])
            moved = cv2.warpAffine(frames[u], np.float32([[1, 0, dx], [0, 1, dy]]), (width, height),
                                   borderMode=cv2.BORDER_REPLICATE)
            maps.append(line_map(moved[None])[0])
        scene[t] = np.median(np.stack(maps), 0)
    rain = (lines - scene > threshold) & (scene < 0.5 * threshold)
    return lines, rain, (scene > threshold) & (lines > threshold)


def rain_scene_shares(masks: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      outputs: list[np.ndarray]) -> dict[str, float]:
    """What outputs leave of their rainy clips' rain lines and keep of their scene lines (%).

    ``masks``: `real_rain_masks` of each rainy clip; ``outputs``: the (T, H, W, 3) uint8 outputs
    for the same clips. Line strengths are summed over all clips before the ratio (NaN when a
    mask is empty everywhere).
    """
    maps = [line_map(o) for o in outputs]
    shares = {}
    for label, k in (('rain lines left', 1), ('scene lines kept', 2)):
        inside = sum(float(mk[0][mk[k]].sum()) for mk in masks)  # the rainy clips' lines there
        kept = sum(float(lo[mk[k]].sum()) for lo, mk in zip(maps, masks))
        shares[label] = 100.0 * kept / inside if inside > 0 else float('nan')
    return shares


def frame_psnrs(out: np.ndarray, gt: np.ndarray) -> list[float]:
    return [min(psnr(o, g), 100.0) for o, g in zip(out, gt)]  # identical frames: 100, not inf


def video_clips(opts: SuiteOptions, preset: str | None, stride: int, frames: int | None = None,
                with_oracle: bool = False) -> Iterator[tuple]:
    """Held-out video clips (name, rainy, clean); preset None gives the clean clips (camera
    pipeline, no rain). ``with_oracle`` adds a fourth element, the rain oracle's output (see the
    module doc, :class:`~rainmamba_core.data.video_rain.VideoRainDataset`'s ``rain_oracle``)."""
    from rainmamba_core.data.video_rain import VideoRainDataset
    roots = [opts.shared_data / n for n in ('clean_video_udacity', 'clean_video_intel')]
    roots = [r for r in roots if r.is_dir()]
    if not roots:
        return
    ds = VideoRainDataset(roots, frames=frames or opts.frames, train=False, split='heldout',
                          presets=[preset or 'light'], eval_stride=stride, size=opts.size,
                          seed=opts.seed + (0 if preset else 1), rain_oracle=with_oracle)
    for i in range(len(ds)):
        item = ds[i]
        gt = to_uint8(item['gt'])
        lq = gt if preset is None else to_uint8(item['lq'])
        if with_oracle:
            yield item['key'].split('/')[0], lq, gt, (lq if preset is None else to_uint8(item['oracle']))
        else:
            yield item['key'].split('/')[0], lq, gt


def suite_sets(opts: SuiteOptions) -> tuple[dict[str, list[Clip]], list[str], dict[str, list[np.ndarray]]]:
    """The sets as lists of (name, rainy, gt) clips, notes on the sets that are missing, and the
    rain oracle's output for each clip of the sets that have one (the held-out video looks)."""
    sets: dict[str, list[Clip]] = {}
    oracles: dict[str, list[np.ndarray]] = {}
    notes = []
    d = opts.shared_data
    for key, folder in (('nturain_a2', 'nturain_a2'), ('pedestrian', 'paired_pmog_pedestrian')):
        if (d / folder).is_dir():
            sets[key] = list(folder_clips(d / folder))
            if key == 'nturain_a2':  # its clean frames alone: do no harm on an unseen sharp scene
                sets['nturain_a2_clean'] = [(n, gt, gt) for n, _, gt in sets[key]]
        else:
            notes.append(f'{key}: {d / folder} is missing; skipped')
    if any((d / n).is_dir() for n in ('clean_video_udacity', 'clean_video_intel')):
        for p in opts.presets:
            for key, stride in ((f'video/{p}', 1), (f'video_stride{opts.stride}/{p}', opts.stride)):
                clips = list(video_clips(opts, p, stride, with_oracle=True))
                sets[key] = [c[:3] for c in clips]
                oracles[key] = [c[3] for c in clips]
        sets['clean'] = list(video_clips(opts, None, opts.stride, opts.clean_frames))
    else:
        notes.append(f'held-out videos: {d}/clean_video_* are missing; skipped')
    if (d / 'real_rain_yard' / 'rain').is_dir():
        sets['real_rain_yard'] = list(folder_clips(d / 'real_rain_yard' / 'rain', opts.real_frames))
    else:
        notes.append('real_rain_yard: missing; no real-rain images')
    return sets, notes, oracles


RAIN_ORACLE = 'rain oracle'


def _oracle_placeholder(rainy: np.ndarray) -> np.ndarray:
    raise EvalError('the rain oracle is not a function of the rainy clip: run_suite reads its output from suite_sets')


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float('nan')


def run_suite(models: dict[str, ClipFn], opts: SuiteOptions,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Score models (label -> clip function) and the baselines on every set.

    Returns:
        ``{'rows': {row: {method: value}}, 'per_set': ..., 'notes': [...], '_images': [...]}``:
        PSNR in dB, brightness in grey levels; JSON-ready except ``_images``.
    """
    if not models:
        raise EvalError('run_suite: no model to evaluate')
    references: dict[str, ClipFn] = {'rainy input': rainy_input, 'temporal median': temporal_median,
                                     RAIN_ORACLE: _oracle_placeholder}
    taken = sorted(set(models) & set(references))
    if taken:
        raise EvalError(f'run_suite: model label(s) {taken} are the names of reference columns; rename the model')
    sets, notes, oracles = suite_sets(opts)
    if not oracles:  # no held-out video rows: no oracle column
        del references[RAIN_ORACLE]
    methods: dict[str, ClipFn] = {**models, **references}
    per_set: dict[str, dict[str, dict[str, float]]] = {}
    images: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    bright: dict[str, list[float]] = {m: [] for m in methods}
    clean_frames: dict[str, list[float]] = {m: [] for m in models}
    a2_clean: dict[str, list[float]] = {m: [] for m in models}
    stream_gap: dict[str, list[float]] = {m: [] for m in models}
    start_gain: dict[str, list[tuple[float, float]]] = {m: [] for m in models}  # (first, later frames)
    no_ref: dict[str, dict[str, float]] = {}   # real rain without ground truth: row -> method -> value
    for name, clips in sets.items():
        t0 = time.time()
        per_set[name] = {}
        # real rain without ground truth: the input's line energy, once per clip for every method
        lines_in = [thin_line_energy(rainy) for _, rainy, gt in clips if gt is None]
        moving = [i for i, (_, rainy, gt) in enumerate(clips) if gt is None and len(rainy) > 1]
        masks = [real_rain_masks(clips[i][1]) for i in moving]
        # the input's per-frame PSNRs, once per clip for every model (the stream start rows)
        input_fp = [frame_psnrs(rainy, gt) for _, rainy, gt in clips] if name.startswith('video/') else []
        for m, fn in methods.items():
            if name in ('clean', 'nturain_a2_clean') and m not in models:
                continue
            if m == RAIN_ORACLE and name not in oracles:
                continue
            scores, outs, lines_out, changes = [], [], [], []
            for i, (clip_name, rainy, gt) in enumerate(clips):
                out = oracles[name][i] if m == RAIN_ORACLE else to_uint8(np.asarray(fn(rainy)))
                if out.shape != rainy.shape:
                    raise EvalError(f'{m} returned {out.shape} for {name}/{clip_name} of shape {rainy.shape}')
                outs.append(out)
                if gt is None:
                    lines_out.append(thin_line_energy(out))
                    changes.append(float(np.abs(out.astype(np.float32) - rainy.astype(np.float32)).mean()))
                    continue
                fp = frame_psnrs(out, gt)
                scores.append(_mean(fp))
                if name == 'clean':
                    clean_frames[m] += fp
                elif name == 'nturain_a2_clean':
                    a2_clean[m] += fp
                elif name.startswith('video/'):
                    bright[m] += brightness_error(out, gt)
                    if m in models and len(fp) > 1:
                        g = np.asarray(fp) - np.asarray(input_fp[i])
                        start_gain[m].append((float(g[0]), float(g[1:].mean())))
                elif name.startswith(f'video_stride{opts.stride}/') and m in models:
                    alone = to_uint8(np.asarray(per_frame_fn(fn)(rainy)))
                    stream_gap[m].append(_mean(fp) - _mean(frame_psnrs(alone, gt)))
            if scores:
                per_set[name][m] = _mean(scores)
            if lines_out:  # over all clips of the set: energy left / energy in, mean change
                no_ref.setdefault(f'{name} thin bright lines left (%)', {})[m] = (
                    100.0 * sum(lines_out) / sum(lines_in) if sum(lines_in) > 0 else float('nan'))
                if masks:  # the same lines split into rain (transient) and scene (persistent) ones
                    for label, v in rain_scene_shares(masks, [outs[i] for i in moving]).items():
                        no_ref.setdefault(f'{name} {label} (%)', {})[m] = v
                no_ref.setdefault(f'{name} mean change (grey levels)', {})[m] = _mean(changes)
            if clips and m != RAIN_ORACLE and (name in ('nturain_a2', 'pedestrian', 'real_rain_yard',
                                                         'video/nturain', 'video/storm')):
                t = len(clips[0][1]) - 1 if name != 'real_rain_yard' else 0
                _add_image(images, name, m, clips[0][1][t], outs[0][t], clips[0][2], t)
        shown = per_set[name] or no_ref.get(f'{name} thin bright lines left (%)', {})
        progress(f'[suite] {name}: {len(clips)} clips, {time.time() - t0:.0f} s  ' + '  '.join(
            f'{m} {v:.2f}' for m, v in shown.items()))
    rows = _rows(per_set, models, bright, clean_frames, stream_gap, opts)
    _kept_rows(rows, 'nturain_a2 clean frames, output vs input', a2_clean)
    _start_rows(rows, start_gain)
    rows.update(no_ref)
    return {'rows': rows, 'per_set': per_set, 'notes': notes, 'targets': TARGETS,
            'options': {'frames': opts.frames, 'size': list(opts.size), 'stride': opts.stride,
                        'presets': list(opts.presets), 'seed': opts.seed},
            '_images': images}


def _add_image(images: list, name: str, method: str, rainy: np.ndarray, out: np.ndarray,
               gt: np.ndarray | None, t: int) -> None:
    for key, panels in images:
        if key == name:
            if method != 'rainy input':  # already the first panel
                panels.append((method, out))
            return
    panels = [('rainy input (frame %d)' % t, rainy)]
    if gt is not None:
        panels.append(('ground truth', gt[t]))
    if method != 'rainy input':
        panels.append((method, out))
    images.append((name, panels))


def _kept_rows(rows: dict[str, dict[str, float]], label: str, frames: dict[str, list[float]]) -> None:
    """Add '<label>, mean (dB)' and '<label>, worst frame (dB)' from per-frame PSNRs of clean input
    streamed through each model (output vs input), when there are any."""
    if any(frames.values()):
        rows[f'{label}, mean (dB)'] = {m: _mean(v) for m, v in frames.items()}
        rows[f'{label}, worst frame (dB)'] = {m: float(min(v)) for m, v in frames.items()}


def _start_rows(rows: dict[str, dict[str, float]], start_gain: dict[str, list[tuple[float, float]]]) -> None:
    """A stream's first frame has no history (zero caches, no previous frame for the detail head):
    the held-out video looks' gain on it and on the frames after it, each a mean over all clips."""
    if any(start_gain.values()):
        for k, label in enumerate(('first frame', 'later frames')):
            rows[f'stream start: held-out videos, {label} gain (dB)'] = {
                m: _mean([pair[k] for pair in v]) for m, v in start_gain.items()}


def _rows(per_set: dict, models: dict, bright: dict, clean_frames: dict, stream_gap: dict,
          opts: SuiteOptions) -> dict[str, dict[str, float]]:
    """The summary table: one row per question, one column per method."""
    rows: dict[str, dict[str, float]] = {}

    def gain(set_name: str) -> dict[str, float]:
        s = per_set.get(set_name, {})
        base = s.get('rainy input')
        return {m: v - base for m, v in s.items() if base is not None}
    for key in ('nturain_a2', 'pedestrian'):
        if key in per_set:
            rows[f'{key} PSNR (dB)'] = dict(per_set[key])
            rows[f'{key} gain (dB)'] = gain(key)
    for prefix in ('video', f'video_stride{opts.stride}'):
        names = [n for n in per_set if n.startswith(prefix + '/')]
        if not names:
            continue
        for n in names:
            rows[f'{n} gain (dB)'] = gain(n)
        methods = per_set[names[0]].keys()
        rows[f'{prefix} all presets gain (dB)'] = {m: _mean([gain(n)[m] for n in names]) for m in methods}
    _kept_rows(rows, 'clean output vs input', clean_frames)
    if any(bright.values()):
        rows['brightness error, mean (grey levels)'] = {m: _mean(v) for m, v in bright.items()}
        rows['brightness error, worst frame (grey levels)'] = {m: float(max(v)) for m, v in bright.items()}
    if any(stream_gap.values()):
        rows[f'streamed minus per-frame, stride {opts.stride} (dB)'] = {m: _mean(v) for m, v in stream_gap.items()}
    return rows


def write_suite_report(results: dict[str, Any], out_dir: str | Path,
                       meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write suite.md (the table), suite.json and images/*.png into ``out_dir``."""
    from rainmamba_core.data.clips import write_image

    from .report import ReportError, side_by_side
    out = Path(out_dir)
    try:
        (out / 'images').mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f'cannot create report folder {out}: {exc}') from None
    image_paths = []
    for name, panels in results.get('_images', []):
        rainy = panels[0][1]
        sample = {'rainy': rainy, 'outputs': {m: o for m, o in panels[1:] if m != 'ground truth'},
                  'gt': next((o for m, o in panels if m == 'ground truth'), None)}
        p = out / 'images' / f'{name.replace("/", "_")}.png'
        write_image(p, side_by_side(sample))
        image_paths.append(p)
    data = {k: v for k, v in results.items() if not k.startswith('_')}
    data['meta'] = meta or {}
    (out / 'suite.json').write_text(json.dumps(data, indent=2, default=float))
    rows = results['rows']
    methods: list[str] = []
    for r in rows.values():
        methods += [m for m in r if m not in methods]
    lines = ['# Generalisation suite', '']
    lines += [f'- **{k}**: {v}' for k, v in (meta or {}).items()]
    o = results['options']
    lines += [f'- held-out videos: {o["frames"]} frames at {o["size"][0]}x{o["size"][1]}, presets '
              f'{", ".join(o["presets"])}, seed {o["seed"]}; PSNR: RGB 0-255, mean over frames then clips']
    if RAIN_ORACLE in methods:
        lines += [f'- **{RAIN_ORACLE}** (video rows, a reference, not a model): the input with every pixel the rain '
                  "changed put back as it was before the camera's JPEG step, i.e. a perfect rain remover that does "
                  "not know the codec. The target holds the codec's error around the rain too: where the oracle "
                  "gains little, a look's gain says more about the codec than about the rain left"]
    lines += ['']
    lines += ['| row | ' + ' | '.join(methods) + ' | target |', '| --- |' + ' --- |' * (len(methods) + 1)]
    for row, vals in rows.items():
        target = target_for(row)
        cells = [_fmt(vals.get(m), signed='gain' in row or 'minus' in row) for m in methods]
        lines.append(f'| {row} | ' + ' | '.join(cells) + f' | {target} |')
    if results.get('notes'):
        lines += ['', 'Skipped: ' + '; '.join(results['notes'])]
    lines += ['', '## Images (rainy | ground truth | methods)', '']
    lines += [f'![{p.stem}](images/{p.name})' for p in image_paths]
    (out / 'suite.md').write_text('\n'.join(lines) + '\n')
    return {'markdown': out / 'suite.md', 'json': out / 'suite.json'}


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '-'
    return f'{v:+.2f}' if signed else f'{v:.2f}'
