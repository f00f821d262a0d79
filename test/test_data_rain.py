"""Synthetic rain: reproducible, statistics follow the parameters, Eq. 8 holds, drops persist."""
from __future__ import annotations

import numpy as np
import pytest

from rainmamba_core.data.clips import builtin_scene
from rainmamba_core.data.synthetic_rain import RainError, RainGenerator, RainParams


def flat_clip(t: int = 3, h: int = 48, w: int = 64, value: int = 120) -> np.ndarray:
    return np.full((t, h, w, 3), value, np.uint8)


def scene_clip(t: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    return np.stack([builtin_scene(h, w, seed=3)] * t)


def test_same_seed_same_clip_and_different_seed_differs() -> None:
    clip = scene_clip()
    a = RainGenerator(RainParams.preset('heavy'), seed=7).render_clip(clip)
    b = RainGenerator(RainParams.preset('heavy'), seed=7).render_clip(clip)
    c = RainGenerator(RainParams.preset('heavy'), seed=8).render_clip(clip)
    assert np.array_equal(a.rainy, b.rainy) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.rainy, c.rainy)


def test_outputs_have_documented_shapes() -> None:
    r = RainGenerator(RainParams.preset('storm'), 0).render_clip(flat_clip())
    assert r.rainy.shape == (3, 48, 64, 3) and r.rainy.dtype == np.uint8
    assert r.streaks.shape == (3, 48, 64) and r.mask.shape == (3, 48, 64)
    assert r.drops.shape == (3, 48, 64, 3)
    assert 0 <= r.streaks.min() and r.streaks.max() <= 1 and 0 <= r.mask.min() and r.mask.max() <= 1


def test_more_density_more_streak_pixels() -> None:
    counts = []
    for density in (0.5, 1.5, 4.0):
        p = RainParams(density=density, drops=0)
        # average over seeds: a single draw could be unlucky
        counts.append(np.mean([np.mean(RainGenerator(p, s).render_clip(flat_clip()).streaks > 0.05)
                               for s in range(3)]))
    assert counts[0] < counts[1] < counts[2]


def test_storm_covers_more_and_is_darker_than_drizzle() -> None:
    clip = flat_clip(value=150)
    dr = RainGenerator(RainParams.preset('drizzle'), 1).render_clip(clip)
    st = RainGenerator(RainParams.preset('storm'), 1).render_clip(clip)

    def coverage(r) -> float:  # pixels visibly changed (> 8 grey levels)
        return float(np.mean(np.abs(r.rainy.astype(int) - clip).max(-1) > 8))
    assert coverage(st) > coverage(dr) + 0.2
    # away from streaks and drops the storm's scene is dimmer (darken + veil)
    free_st = (st.streaks < 0.01) & (st.mask < 0.01)
    free_dr = (dr.streaks < 0.01) & (dr.mask < 0.01)
    assert st.rainy[free_st].mean() < dr.rainy[free_dr].mean() - 5


def test_composition_follows_eq8() -> None:
    p = RainParams.preset('heavy', darken=0.0, veil=0.0)
    r = RainGenerator(p, 3).render_clip(scene_clip())
    b = r.clean.astype(np.float64) / 255
    m = r.mask[..., None]
    expected = np.clip((1 - m) * (b + r.streaks[..., None]) + m * r.drops, 0, 1) * 255
    # uint8 rounding of the rainy frame: at most half a grey level (+ float32 arithmetic)
    assert np.abs(r.rainy - expected).max() <= 0.5 + 1e-3


def test_streaks_move_consistently_between_frames() -> None:
    speed = 8.0
    p = RainParams(density=0.4, layers=1, angle=0.0, angle_jitter=0.0, speed=speed, length=6,
                   drops=0)
    r = RainGenerator(p, 5).render_clip(flat_clip(t=2, h=96, w=96))
    s0, s1 = r.streaks[0], r.streaks[1]
    scores = [float(np.sum(s0[:96 - d] * s1[d:])) for d in range(0, 20)]
    best = int(np.argmax(scores))
    # drops fall straight down at speed * U(0.8, 1.2) px/frame
    assert 0.8 * speed - 1 <= best <= 1.2 * speed + 1, scores


def test_lens_drops_persist_and_slide() -> None:
    base = dict(density=0.0, drops=40, drop_late=0.0, drop_radius=(6.0, 8.0))
    still = RainGenerator(RainParams(**base, drop_slide=0.0), 2).render_clip(flat_clip(t=4, h=96, w=128))
    assert still.mask[0].sum() > 0
    assert np.allclose(still.mask[0], still.mask[3])  # clinging drops stay put
    slide = RainGenerator(RainParams(**base, drop_slide=2.0), 2).render_clip(flat_clip(t=4, h=96, w=128))
    m0, m3 = slide.mask[0] > 0.5, slide.mask[3] > 0.5
    iou = (m0 & m3).sum() / max((m0 | m3).sum(), 1)
    assert 0.2 < iou < 1.0  # the same drops, partly moved
    ys = np.arange(96)[:, None]
    cy = [float((slide.mask[t] * ys).sum() / slide.mask[t].sum()) for t in (0, 3)]
    assert cy[1] > cy[0]  # drops run down the lens


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(RainError, match='preset'):
        RainParams.preset('monsoon')
    with pytest.raises(RainError, match='uint8'):
        RainGenerator().render_clip(np.zeros((2, 8, 8, 3), np.float32))
