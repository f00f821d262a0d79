"""Evaluation report: ``report.json``, ``report.md``, side-by-side images and a plot.

Images are rainy | each method's output | ground truth, labelled, one PNG per sample clip.
The plot (per-frame PSNR of each method on the first clip, and mean PSNR per method) needs
matplotlib (the ``train`` extra); without it the plot is skipped and the report says so.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rainmamba_core.errors import RainMambaError

log = logging.getLogger(__name__)


class ReportError(RainMambaError, RuntimeError):
    """The report cannot be written (output folder not writable)."""


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return 'n/a'
    return f'{v:.{digits}f}' if isinstance(v, float) else str(v)


def side_by_side(sample: dict[str, Any]) -> np.ndarray:
    """(H, k*W, 3) uint8 strip: rainy | outputs ... | gt, with a label on each panel."""
    panels = [('rainy input', sample['rainy'])]
    panels += [(m, o) for m, o in sample['outputs'].items() if m != 'rainy_input']
    if sample.get('gt') is not None:
        panels.append(('ground truth', sample['gt']))
    out = []
    for label, img in panels:
        img = np.ascontiguousarray(img.copy())
        scale = max(img.shape[0] / 480, 0.4)
        cv2.putText(img, label, (6, int(22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0),
                    3, cv2.LINE_AA)
        cv2.putText(img, label, (6, int(22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
        out.append(img)
    return np.concatenate(out, axis=1)


def _plot(results: dict[str, Any], path: Path) -> str | None:
    """Write the plot; return None on success or the reason it was skipped."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return 'matplotlib is not installed (pip install matplotlib, or the package\'s train extra)'
    methods = results['methods']
    first = next(iter(next(iter(methods.values()))['sequences']), None)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m, r in methods.items():
        if first is not None and first in r['sequences']:
            axes[0].plot(r['sequences'][first]['psnr_frames'], marker='o', label=m)
    axes[0].set(title=f'per-frame PSNR, clip {first}', xlabel='frame', ylabel='PSNR (dB)')
    axes[0].legend()
    names = list(methods)
    axes[1].bar(names, [methods[m]['summary'].get('psnr', 0.0) for m in names],
                color=['C0', 'C1', 'C2', 'C3'][:len(names)])
    axes[1].set(title='mean PSNR over clips', ylabel='PSNR (dB)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def preset_groups(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean PSNR/SSIM per rain preset for synthetic clips (their names carry the preset).

    Returns:
        ``{preset: {method: {'psnr', 'ssim', 'clips'}}}`` for the presets present, in
        ``RainParams.PRESETS`` order; empty when no clip name carries a preset.
    """
    from rainmamba_core.data.synthetic_rain import RainParams
    if not results.get('has_gt'):
        return {}
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for preset in RainParams.PRESETS:
        tag = f'_{preset}_'
        for method, r in results['methods'].items():
            seqs = [v for k, v in r['sequences'].items() if tag in f'_{k}_']
            if seqs:
                groups.setdefault(preset, {})[method] = {
                    'psnr': float(np.mean([v['psnr'] for v in seqs])),
                    'ssim': float(np.mean([v['ssim'] for v in seqs])), 'clips': len(seqs)}
    return groups


def write_report(results: dict[str, Any], out_dir: str | Path, title: str = 'RainMamba evaluation',
                 meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write report.json, report.md, images/*.png and psnr.png into `out_dir`.

    Args:
        results: what :func:`rainmamba_core.eval.evaluate.evaluate` returned.
        meta: extra facts for the report (model, data, command ...).

    Returns:
        paths of what was written.
    """
    out = Path(out_dir)
    try:
        (out / 'images').mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f'cannot create report folder {out}: {exc}') from None
    from rainmamba_core.data.clips import write_image
    written: dict[str, Path] = {}
    image_paths = []
    for s in results.get('_samples', []):
        p = out / 'images' / f'{s["name"]}_f{s["frame"]}.png'
        write_image(p, side_by_side(s))
        image_paths.append(p)
    plot_note = None
    if results.get('has_gt'):
        plot_note = _plot(results, out / 'psnr.png')
        if plot_note is None:
            written['plot'] = out / 'psnr.png'
        else:
            log.warning('plot skipped: %s', plot_note)
    else:
        plot_note = 'no ground truth: nothing to plot'
    data = {k: v for k, v in results.items() if not k.startswith('_')}
    groups = preset_groups(results)
    if groups:
        data['by_preset'] = groups
    data['meta'] = meta or {}
    data['plot'] = str(written['plot'].name) if 'plot' in written else f'skipped: {plot_note}'
    (out / 'report.json').write_text(json.dumps(data, indent=2, default=float))
    written['json'] = out / 'report.json'

    lines = [f'# {title}', '']
    for k, v in (meta or {}).items():
        lines.append(f'- **{k}**: {v}')
    lines += [f'- clips: {results["clips"]}, frames: {results["frames"]}',
              '- PSNR/SSIM: RGB, 0-255, crop_border 0, mean over frames then over clips '
              '(MMEditing conventions); tMAD: mean |output frame change - truth frame change| '
              '(0-255, lower is better); LPIPS: ' + results.get('lpips', 'n/a'), '']
    if results.get('has_gt'):
        lines += ['| method | PSNR (dB) | SSIM | tMAD | LPIPS |', '| --- | --- | --- | --- | --- |']
        for m, r in results['methods'].items():
            s = r['summary']
            lines.append(f'| {m} | {_fmt(s.get("psnr"))} | {_fmt(s.get("ssim"), 4)} | '
                         f'{_fmt(s.get("tmad"))} | {_fmt(s.get("lpips"), 4)} |')
        if groups:
            names = list(results['methods'])
            lines += ['', '## By rain preset (PSNR dB / SSIM, mean over the clips of each preset)', '',
                      '| preset | clips | ' + ' | '.join(names) + ' |', '| --- | --- |' + ' --- |' * len(names)]
            for preset, g in groups.items():
                count = next(iter(g.values()))['clips']
                lines.append(f'| {preset} | {count} | ' + ' | '.join(
                    f'{_fmt(g[m]["psnr"])} / {_fmt(g[m]["ssim"], 4)}' if m in g else '-' for m in names) + ' |')
        lines += ['', '## Per clip (PSNR / SSIM)', '']
        names = list(results['methods'])
        lines += ['| clip | ' + ' | '.join(names) + ' |', '| --- |' + ' --- |' * len(names)]
        for clip in next(iter(results['methods'].values()))['sequences']:
            cells = [f'{_fmt(results["methods"][m]["sequences"][clip]["psnr"])} / '
                     f'{_fmt(results["methods"][m]["sequences"][clip]["ssim"], 4)}' for m in names]
            lines.append(f'| {clip} | ' + ' | '.join(cells) + ' |')
    else:
        lines.append('No ground truth: qualitative results only (see the images).')
    lines += ['', '## Images', '']
    lines += [f'![{p.stem}](images/{p.name})' for p in image_paths]
    lines += ['', 'Plot: ![psnr](psnr.png)' if 'plot' in written else f'Plot skipped: {plot_note}.', '']
    (out / 'report.md').write_text('\n'.join(lines))
    written['markdown'] = out / 'report.md'
    return written
