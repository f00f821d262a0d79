"""Offline video inference the way the authors test: temporal windows and spatial tiles.

A video of any length is cut into temporal windows of `tile[0]` frames that overlap by
`overlap[0]` frames (stride tile[0] - overlap[0]; the last window is aligned to the end), every
window into spatial tiles of tile[1] x tile[2] overlapping by overlap[1:] pixels, whose inner
borders (overlap//2 pixels) are discarded; overlapping outputs are averaged. This reproduces
`test_video`/`test_clip` of the authors' DrainNet, with per-dataset presets. A tile size of 0
means full frame (the model pads to its stride and generates Hilbert curves for the real size).

Glossary: B batch (1), T frames, H x W frame size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rainmamba_core.models.rainmamba import RainMamba


@dataclass(frozen=True)
class TilePreset:
    tile: tuple[int, int, int]      # (frames, height, width); height/width 0 = full frame
    overlap: tuple[int, int, int]   # (frames, height, width)


# From the authors' test code per dataset.
PRESETS: dict[str, TilePreset] = {
    'VRDS': TilePreset((5, 256, 256), (4, 32, 32)),
    'LWDDS': TilePreset((5, 256, 256), (4, 32, 32)),
    'RainVIDSS': TilePreset((7, 128, 128), (6, 40, 40)),
    'RainSynAll100': TilePreset((5, 128, 128), (1, 4, 4)),
    'full': TilePreset((5, 0, 0), (4, 0, 0)),
}


def _starts(size: int, tile: int, stride: int) -> list[int]:
    return list(range(0, size - tile, stride)) + [max(0, size - tile)]


def derain_clip_tiled(fn: Callable[[torch.Tensor], torch.Tensor], clip: torch.Tensor, tile: int,
                      overlap: int) -> torch.Tensor:
    """Spatial tiling of one window. clip: (B, T, 3, H, W) -> (B, T, 3, H, W) on the CPU."""
    b, t, c, h, w = clip.shape
    if tile == 0 or (tile >= h and tile >= w):
        return fn(clip).float().cpu()
    if overlap >= tile:
        raise ValueError(f'spatial overlap {overlap} must be smaller than the tile {tile}')
    stride = tile - overlap
    hs, ws = _starts(h, tile, stride), _starts(w, tile, stride)
    acc = torch.zeros(b, t, c, h, w)
    weight = torch.zeros_like(acc)
    half = overlap // 2
    for hi in hs:
        for wi in ws:
            out = fn(clip[..., hi:hi + tile, wi:wi + tile]).float().cpu()
            mask = torch.ones_like(out)
            if half:  # discard the inner borders of each tile, as the authors do
                if hi < hs[-1]:
                    out[..., -half:, :] = 0
                    mask[..., -half:, :] = 0
                if wi < ws[-1]:
                    out[..., -half:] = 0
                    mask[..., -half:] = 0
                if hi > hs[0]:
                    out[..., :half, :] = 0
                    mask[..., :half, :] = 0
                if wi > ws[0]:
                    out[..., :half] = 0
                    mask[..., :half] = 0
            acc[..., hi:hi + tile, wi:wi + tile] += out
            weight[..., hi:hi + tile, wi:wi + tile] += mask
    return acc / weight


@torch.inference_mode()
def derain_video(model: RainMamba, video: torch.Tensor, preset: str | TilePreset = 'full',
                 curves: tuple[torch.Tensor, torch.Tensor] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Derain a whole video with temporal windows and spatial tiles.

    Args:
        model: any RainMamba (official or causal; both run whole windows here).
        video: (B, T, 3, H, W) in [0, 1], on the model's device or the CPU.
        preset: a key of PRESETS or a TilePreset.
        curves: official mode: the authors' precomputed curves for the tile size (else generated).
        progress: called as progress(done_windows, total_windows).
    Returns:
        (B, T, 3, H, W) float on the CPU.
    """
    p = PRESETS[preset] if isinstance(preset, str) else preset
    device = next(model.parameters()).device
    b, d, c, h, w = video.shape
    frames, overlap = p.tile[0], p.overlap[0]
    if overlap >= frames:
        raise ValueError(f'temporal overlap {overlap} must be smaller than the window {frames}')
    starts = _starts(d, frames, frames - overlap)
    acc = torch.zeros(b, d, c, h, w)
    count = torch.zeros(b, d, 1, 1, 1)

    def fn(x: torch.Tensor) -> torch.Tensor:
        use = curves if curves is not None and x.shape[-1] == p.tile[2] and x.shape[1] == frames else None
        return model(x.to(device), curves=use)

    for i, s in enumerate(starts):
        window = video[:, s:s + frames]
        acc[:, s:s + frames] += derain_clip_tiled(fn, window, max(p.tile[1], 0), p.overlap[1])
        count[:, s:s + frames] += 1
        if progress:
            progress(i + 1, len(starts))
    return acc / count
