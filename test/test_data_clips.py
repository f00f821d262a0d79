"""Clean clip sources: frame folders, stills with camera motion, the built-in scene."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rainmamba_core.data.clips import (
    builtin_clip,
    builtin_scene,
    load_clip,
    load_frame_folder,
    still_to_clip,
    write_image,
)


def test_builtin_scene_is_seeded_and_textured() -> None:
    a, b, c = builtin_scene(48, 64, 1), builtin_scene(48, 64, 1), builtin_scene(48, 64, 2)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() > 10  # not a flat image


def test_still_to_clip_moves_smoothly() -> None:
    scene = builtin_scene(120, 160, 0)
    clip = still_to_clip(scene, 6, (48, 64), rng=3)
    assert clip.shape == (6, 48, 64, 3)
    assert np.array_equal(clip, still_to_clip(scene, 6, (48, 64), rng=3))
    steps = [np.abs(clip[t + 1].astype(int) - clip[t]).mean() for t in range(5)]
    assert np.abs(clip[5].astype(int) - clip[0]).mean() > 0  # the camera moved
    assert max(steps) < 60  # no jumps: neighbouring frames stay similar


def test_frame_folder_is_naturally_sorted(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        write_image(tmp_path / f'f{i}.png', np.full((8, 8, 3), i, np.uint8))
    clip = load_frame_folder(tmp_path)
    assert [int(f[0, 0, 0]) for f in clip] == [1, 2, 10]


def test_load_clip_dispatches(tmp_path: Path) -> None:
    write_image(tmp_path / 'still.png', builtin_scene(60, 80, 4))
    assert load_clip(tmp_path / 'still.png', frames=3, size=(30, 40)).shape == (3, 30, 40, 3)
    assert load_clip('builtin', frames=2, size=(24, 32)).shape == (2, 24, 32, 3)
    assert builtin_clip(2, 24, 32, seed=1).shape == (2, 24, 32, 3)
