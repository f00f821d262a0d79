"""Procedural training scenes: reproducible, varied, with thin structure, and wired into VideoRainDataset."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rainmamba_core.data.clips import write_image
from rainmamba_core.data.datasets import DatasetError
from rainmamba_core.data.procedural import procedural_layers, procedural_scene
from rainmamba_core.data.synthetic_rain import RainError
from rainmamba_core.data.video_rain import VideoRainDataset
from rainmamba_core.eval.suite import thin_line_energy


def test_a_scene_is_reproducible_from_the_generator_state() -> None:
    a = procedural_scene(96, 128, np.random.default_rng(3))
    b = procedural_scene(96, 128, np.random.default_rng(3))
    c = procedural_scene(96, 128, np.random.default_rng(4))
    assert a.shape == (96, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 5, 'another seed should give another scene'


def test_scenes_vary_in_exposure_and_carry_texture_and_thin_lines() -> None:
    rng = np.random.default_rng(0)
    scenes = [procedural_scene(120, 160, rng) for _ in range(12)]
    means = np.array([s.mean() for s in scenes])
    # the exposure draw runs from dim to washed out: the scenes' mean grey levels spread widely
    assert means.std() > 15, f'mean grey levels {np.round(means)} barely vary'
    assert means.min() < 110 < means.max()
    lap = [np.abs(cv2.Laplacian(cv2.cvtColor(s, cv2.COLOR_RGB2GRAY), cv2.CV_32F)).mean() for s in scenes]
    assert min(lap) > 1.0, f'a scene without texture (mean |Laplacian| {min(lap):.2f})'
    # thin lines brighter than their surroundings (rails, mullions, poles): most scenes have some
    assert sum(thin_line_energy(s[None]) > 0 for s in scenes) >= 9


def test_a_too_small_scene_is_refused() -> None:
    with pytest.raises(DatasetError, match='at least 32x32'):
        procedural_scene(16, 64, np.random.default_rng(0))


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    for k in range(12):
        write_image(tmp_path / 'v' / 'road' / f'{k:05d}.png', np.full((40, 64, 3), 90 + k, np.uint8))
    return tmp_path / 'v'


def test_the_dataset_makes_moving_procedural_clips_with_rain(videos: Path) -> None:
    ds = VideoRainDataset([videos], frames=4, crop=64, split='all', procedural_prob=1.0, clean_prob=0.0,
                          camera=False, bases={'moderate': 1.0})
    np.random.seed(1)
    item = ds[0]
    assert item['key'].startswith('procedural/')
    gt, lq = item['gt'].numpy(), item['lq'].numpy()
    assert gt.shape == (4, 3, 64, 64)
    assert np.abs(gt[0] - gt[-1]).mean() > 0.005, 'the simulated camera should move over the scene'
    assert np.abs(lq - gt).max() > 0.1, 'the rain should be rendered over the scene'
    # the scene is drawn at about twice the crop, so its one-pixel lines survive into the clip
    frames = (gt.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    assert thin_line_energy(frames) > 0


def test_procedural_prob_zero_leaves_the_items_as_they_were(videos: Path) -> None:
    def item(**kw):
        ds = VideoRainDataset([videos], frames=3, crop=32, split='all', camera=False, **kw)
        np.random.seed(5)
        return ds[0]
    before, zero = item(), item(procedural_prob=0.0)
    assert before['key'] == zero['key']
    assert np.array_equal(before['lq'].numpy(), zero['lq'].numpy())
    assert np.array_equal(before['gt'].numpy(), zero['gt'].numpy())
    with pytest.raises(DatasetError, match='procedural_prob'):
        VideoRainDataset([videos], procedural_prob=1.2)


def _rain_strength(ds: VideoRainDataset, seeds: range) -> tuple[float, set[str]]:
    """Mean |rainy - clean| over items drawn with numpy's global seeds, and the items' sources."""
    diffs, sources = [], set()
    for s in seeds:
        np.random.seed(s)
        item = ds[0]
        sources.add(item['key'].split('/')[0])
        diffs.append(float(np.abs(item['lq'].numpy() - item['gt'].numpy()).mean()))
    return float(np.mean(diffs)), sources


def test_procedural_clips_take_their_own_rain_looks(videos: Path) -> None:
    def ds(procedural_prob: float, **kw) -> VideoRainDataset:
        return VideoRainDataset([videos], frames=3, crop=48, split='all', camera=False, clean_prob=0.0,
                                procedural_prob=procedural_prob, bases={'drizzle': 1.0}, **kw)
    seeds = range(6)
    drizzle, sources = _rain_strength(ds(1.0), seeds)
    storm, _ = _rain_strength(ds(1.0, procedural_bases={'storm': 1.0}), seeds)
    assert sources == {'procedural'}
    # storm streaks are many times denser and brighter than drizzle's; 3x leaves room for the draws
    assert storm > 3 * drizzle, (storm, drizzle)
    # footage clips keep ``bases``: with no procedural clips the option changes nothing
    np.random.seed(3)
    plain = ds(0.0)[0]
    np.random.seed(3)
    other = ds(0.0, procedural_bases={'storm': 1.0})[0]
    assert np.array_equal(plain['lq'].numpy(), other['lq'].numpy())
    with pytest.raises(DatasetError, match='procedural_bases'):
        VideoRainDataset([videos], procedural_bases={'storm': -1.0})
    with pytest.raises(RainError, match='unknown rain preset'):
        VideoRainDataset([videos], procedural_bases={'hail': 1.0})


def _aligned_residue(ds: VideoRainDataset, seeds) -> float:
    """Mean |previous frame aligned onto the next − the next| of clean clips, in grey levels."""
    import torch

    from rainmamba_core.ops.align import aligned_difference
    out = []
    for s in seeds:
        np.random.seed(s)
        gt = ds[0]['gt']
        out.append(float(aligned_difference(gt[1:], gt[:-1], torch.ones(len(gt) - 1, dtype=torch.bool)).abs().mean()))
    return 255 * float(np.mean(out))


def test_procedural_zoom_and_roll_leave_scene_in_the_aligned_difference(videos: Path) -> None:
    def ds(**kw) -> VideoRainDataset:
        return VideoRainDataset([videos], frames=4, crop=64, split='all', camera=False, clean_prob=1.0,
                                procedural_prob=1.0, **kw)
    seeds = range(8)
    pan = _aligned_residue(ds(), seeds)
    zoom = _aligned_residue(ds(procedural_zoom=0.1, procedural_roll=6.0), seeds)
    # a pan of a flat scene is undone by the alignment (up to resampling); zoom and roll are not:
    # the calibration over 40 clips at 112² gave 4.5 -> 8.2 grey levels; 1.3x leaves room for 8 draws
    assert zoom > 1.3 * pan, (zoom, pan)
    # 0 (the default) is the usual motion, item for item
    np.random.seed(5)
    plain = ds()[0]
    np.random.seed(5)
    same = ds(procedural_zoom=0.0, procedural_roll=0.0)[0]
    assert np.array_equal(plain['gt'].numpy(), same['gt'].numpy())
    for bad in ({'procedural_zoom': -0.1}, {'procedural_roll': float('nan')}):
        with pytest.raises(DatasetError, match=next(iter(bad))):
            VideoRainDataset([videos], **bad)


def test_layers_are_reproducible_and_the_coverage_is_where_the_colours_differ() -> None:
    a = procedural_layers(96, 128, np.random.default_rng(3))
    b = procedural_layers(96, 128, np.random.default_rng(3))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    back, front, alpha = a
    assert back.shape == front.shape == (96, 128, 3) and alpha.shape == (96, 128) and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    # a layer of posts, poles and fronds covers some of the scene, not all of it
    covers = [procedural_layers(96, 128, np.random.default_rng(s))[2].mean() for s in range(10)]
    assert 0.01 < np.mean(covers) < 0.5, covers
    # where it covers, its colour is not the scene's (it is a thing in front, drawn on its own)
    on = alpha > 0.99
    assert np.abs(front[on].astype(int) - back[on]).mean() > 5
    with pytest.raises(DatasetError, match='at least 32x32'):
        procedural_layers(96, 20, np.random.default_rng(0))


def _shift(clip: np.ndarray) -> float:
    """How far (px) a clip's content moves from its first frame to its second (phase correlation)."""
    grey = [cv2.cvtColor(np.ascontiguousarray(f.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY).astype(np.float64)
            for f in clip[:2]]
    (dx, dy), _ = cv2.phaseCorrelate(grey[0], grey[1])
    return float(np.hypot(dx, dy))


def test_parallax_clips_move_their_front_layer_farther_than_the_scene(videos: Path, monkeypatch) -> None:
    import rainmamba_core.data.video_rain as vr

    def ds(**kw) -> VideoRainDataset:
        return VideoRainDataset([videos], frames=3, crop=128, split='all', camera=False, clean_prob=1.0,
                                procedural_prob=1.0, **kw)

    def clip(seed: int, cover: float) -> np.ndarray:
        # one scene as both layers; the front covering nothing shows how the back moves, covering
        # everything how the front moves, along the same path (the same seed)
        def layers(h, w, rng):
            scene = procedural_scene(h, w, rng)
            return scene, scene, np.full((h, w), cover, np.float32)
        monkeypatch.setattr(vr, 'procedural_layers', layers)
        np.random.seed(seed)
        item = ds(procedural_parallax=1.0)[0]
        assert item['key'].startswith('procedural/')
        return item['gt'].numpy()

    ratios = []
    for seed in range(12):
        back, front = _shift(clip(seed, 0.0)), _shift(clip(seed, 1.0))
        if 1.0 < back < 12.0:  # a shift phase correlation measures well at 128 px (not ~0, not huge)
            ratios.append(front / back)
    # the front moves PARALLAX = 1.3-3 times as far; 0.15 below/above for the shake's sub-pixel
    # sinusoids and the window clamped at the scene's border
    assert len(ratios) >= 4 and 1.15 < min(ratios) and max(ratios) < 3.15, ratios
    assert max(ratios) - min(ratios) > 0.3, f'one parallax for every clip: {ratios}'
    monkeypatch.undo()
    # 0 (the default) is the usual procedural clip, item for item; the real layers blend into it
    np.random.seed(5)
    plain = ds()[0]
    np.random.seed(5)
    same = ds(procedural_parallax=0.0)[0]
    assert np.array_equal(plain['gt'].numpy(), same['gt'].numpy())
    np.random.seed(5)
    assert not np.array_equal(plain['gt'].numpy(), ds(procedural_parallax=1.0)[0]['gt'].numpy())
    with pytest.raises(DatasetError, match='procedural_parallax'):
        VideoRainDataset([videos], procedural_parallax=1.5)
