"""Self-supervised targets for real rainy video: rain is transient, the scene and overlays are not."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rainmamba_core.data.clips import write_image
from rainmamba_core.data.datasets import DatasetError
from rainmamba_core.data.real_rain import RealRainClips, distinct_frames, transient_rain_target
from rainmamba_core.data.video_rain import VideoRainDataset

H, W = 96, 128


def scene(seed: int = 0) -> np.ndarray:
    """A textured world larger than the frame, with bright upright scene lines (railings)."""
    rng = np.random.default_rng(seed)
    # texture a flow can follow (std about 14 grey levels at a few pixels' scale)
    world = cv2.GaussianBlur(rng.uniform(0, 200, (H + 40, W + 80, 3)).astype(np.float32), (0, 0), 1.5)
    world[:, 30::17] = 215.0                                # thin bright upright lines of the scene
    return np.clip(world, 0, 255).astype(np.uint8)


def panned_rainy_clip(frames: int = 7, seed: int = 0, overlay: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rainy, clean, rain masks, scene-line masks): a camera panning 4 px a frame over ``scene``,
    new streaks (1 px wide, 9-15 px long, +70 grey levels) in every frame, and a bright overlay
    box fixed on the screen (a watermark: in input and clean alike)."""
    rng = np.random.default_rng(seed + 1)
    world = scene(seed)
    clean, rainy, rain, lines = [], [], [], []
    for t in range(frames):
        x = 4 * t
        c = world[10:10 + H, x:x + W].copy()
        if overlay:
            c[4:14, 4:40] = 230
        line = np.zeros((H, W), bool)
        line[:, [k - x for k in range(30, W + 80, 17) if 0 <= k - x < W]] = True
        r = c.astype(np.int16)
        streak = np.zeros((H, W), bool)
        for _ in range(25):
            y0, x0, n = int(rng.integers(16, H - 16)), int(rng.integers(44, W - 4)), int(rng.integers(9, 16))
            streak[y0:y0 + n, x0] = True
        streak &= ~line                          # a streak on a scene line cannot be scored either way
        r[streak] += 70
        clean.append(c), rainy.append(np.clip(r, 0, 255).astype(np.uint8)), rain.append(streak), lines.append(line)
    return np.stack(rainy), np.stack(clean), np.stack(rain), np.stack(lines)


def test_distinct_frames_drops_repeats_but_keeps_the_first() -> None:
    rainy, *_ = panned_rainy_clip(4)
    clip = np.stack([rainy[0], rainy[0], rainy[1], rainy[2], rainy[2], rainy[3]])
    assert distinct_frames(clip) == [0, 2, 3, 5]


def test_the_target_takes_out_transient_rain_and_keeps_scene_lines_and_overlays() -> None:
    rainy, clean, rain, lines = panned_rainy_clip(7)
    target, mask = transient_rain_target(rainy)
    inner = slice(1, 6)        # frames with neighbours on both sides (the ends have two, still enough)
    found = mask & rain
    err_found = np.abs(target.astype(float) - clean)[found].mean()
    print(f'streak pixels: mask covers {mask[inner][rain[inner]].mean():.3f} (inner frames); '
          f'error where found 70 -> {err_found:.1f} grey levels')
    # most streak pixels are found; a streak pixel within a pixel of a scene line (lines every
    # 17 px: about 1 in 8) or of a neighbour's streak is kept by design (about 1 in 5 here)
    assert mask[inner][rain[inner]].mean() > 0.7
    # and what is found is the scene again (the median of the warped neighbours: exact for a pure
    # pan where the flow is right; a pixel off on this texture would be about 10 grey levels)
    assert err_found < 5.0
    # the scene's own bright lines move with the scene: they are kept (the 1 px dilation of a
    # streak next to a line may touch it: a few per cent; warped bilinearly, 45 % were masked)
    assert mask[lines].mean() < 0.06
    assert np.abs(target.astype(float) - rainy)[lines].mean() < 2.0
    # the overlay stays on the screen while the scene moves: transient in the scene, not on screen
    assert not mask[:, 4:14, 4:40].any()
    # outside the mask the target *is* the input: nothing blurred, nothing smeared
    assert np.array_equal(target[~mask], rainy[~mask])
    # the target never adds light
    assert (target.astype(int) <= rainy).all()


def test_a_clip_without_rain_gets_no_mask_and_a_cut_is_not_used_as_a_neighbour() -> None:
    _, clean, _, _ = panned_rainy_clip(5)
    target, mask = transient_rain_target(clean)
    # a few specks where the flow is off (each grown to 3x3); the rainy clip's mask is 7 %
    assert mask.mean() < 0.01
    other = (scene(seed=9)[10:10 + H, 4:4 + W] * 0.5).astype(np.uint8)
    cut = np.stack([*clean[:3], scene(seed=9)[10:10 + H, 0:W] // 2, other])   # 3-4: another, darker place
    target, mask = transient_rain_target(cut)
    assert mask[2].mean() < 0.01                         # frame 2's later neighbours do not fit: left out
    with pytest.raises(DatasetError, match='T >= 3'):
        transient_rain_target(clean[:2])


def write_clip(folder: Path, frames: np.ndarray) -> None:
    for k, f in enumerate(frames):
        write_image(folder / f'{k:03d}.png', f)


def test_real_rain_clips_hold_out_the_end_and_sample_consecutive_distinct_frames(tmp_path: Path) -> None:
    rainy, *_ = panned_rainy_clip(10)
    write_clip(tmp_path / 'yard' / 'rain', np.stack([rainy[0], rainy[0], *rainy[1:]]))   # one repeat
    clips = RealRainClips(tmp_path / 'yard', holdout=3)
    name, frames, targets, masks = clips.clips[0]
    assert name == 'yard/rain' and masks.shape == frames.shape[:3]
    # 11 files, the last 3 held out, the repeat dropped: frames 0-7 of the pan
    assert len(frames) == 7 and np.array_equal(frames, rainy[:7])
    held = {rainy[k].tobytes() for k in (7, 8, 9)}
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, lq, gt, mk = clips.sample(4, rng, stride=(1, 2))
        assert lq.shape == gt.shape == (4, H, W, 3) and mk.shape == (4, H, W)
        assert np.array_equal(gt[~mk], lq[~mk])       # the mask is where the target differs
        assert not {f.tobytes() for f in lq} & held
        pos = [next(k for k in range(7) if np.array_equal(f, frames[k])) for f in lq]
        assert len(set(np.diff(pos))) == 1 and abs(np.diff(pos)[0]) in (1, 2)
    with pytest.raises(DatasetError, match='fewer than 3'):
        RealRainClips(tmp_path / 'yard', holdout=9)
    with pytest.raises(DatasetError, match='not a folder'):
        RealRainClips(tmp_path / 'nope')


def test_video_dataset_mixes_in_real_clips_with_their_targets(tmp_path: Path) -> None:
    rainy, *_ = panned_rainy_clip(8)
    write_clip(tmp_path / 'real' / 'cam0', rainy)
    write_clip(tmp_path / 'videos' / 'drive', panned_rainy_clip(12, seed=3, overlay=False)[1])
    ds = VideoRainDataset([tmp_path / 'videos'], frames=4, crop=48, split='all',
                          real_roots=[tmp_path / 'real'], real_prob=1.0)
    np.random.seed(0)
    item = ds[0]
    assert '/real/' in item['key'] and item['lq'].shape == item['gt'].shape == (4, 3, 48, 48)
    assert (item['gt'] <= item['lq'] + 1e-6).all()      # the target only takes light out
    assert (item['lq'] - item['gt']).abs().max() > 0.1  # and here it takes some rain out
    assert 'weight' not in item                        # weights only when asked for
    # real_outside_weight: a weight map, 1 in the rain mask, the weight outside; ones on synthetic clips
    ds = VideoRainDataset([tmp_path / 'videos'], frames=4, crop=48, split='all',
                          real_roots=[tmp_path / 'real'], real_prob=0.5, real_outside_weight=0.1)
    seen = set()
    for seed in range(12):
        np.random.seed(seed)
        item = ds[0]
        w = item['weight']
        assert w.shape == (4, 1, 48, 48)
        if '/real/' in item['key']:
            seen.add('real')
            assert float(w.min()) == pytest.approx(0.1) and float(w.max()) > 0.9
            changed = (item['lq'] - item['gt']).abs().amax(1, keepdim=True) > 0.02
            # where the target takes rain out (the window's resize softens the mask's edges; with
            # the weight spread at random, this mean would be about 0.1 + 0.9 * 6 %)
            assert float(w[changed].mean()) > 0.8
        else:
            seen.add('synthetic')
            assert bool((w == 1).all())
    assert seen == {'real', 'synthetic'}
    with pytest.raises(DatasetError, match='real_outside_weight'):
        VideoRainDataset([tmp_path / 'videos'], split='all', real_roots=[tmp_path / 'real'],
                         real_prob=0.5, real_outside_weight=1.5)
    with pytest.raises(DatasetError, match='real_roots'):
        VideoRainDataset([tmp_path / 'videos'], split='all', real_prob=0.5)
    # real_prob 0 draws no random numbers: older configs reproduce exactly
    a = VideoRainDataset([tmp_path / 'videos'], frames=3, crop=32, split='all')
    b = VideoRainDataset([tmp_path / 'videos'], frames=3, crop=32, split='all',
                         real_roots=[tmp_path / 'real'], real_prob=0.0)
    np.random.seed(5)
    x = a[0]['lq']
    np.random.seed(5)
    assert np.array_equal(x.numpy(), b[0]['lq'].numpy())


def test_a_video_file_is_a_clip_and_mixed_sizes_are_refused(tmp_path: Path) -> None:
    from rainmamba_core.data.clips import write_mp4
    rainy, *_ = panned_rainy_clip(6)
    if not write_mp4(tmp_path / 'cam.mp4', list(rainy)):
        pytest.skip('this OpenCV cannot write mp4v video')
    clips = RealRainClips(tmp_path / 'cam.mp4', holdout=1)
    name, frames, targets, _ = clips.clips[0]
    assert name == 'cam.mp4' and frames.shape == (5, H, W, 3) == targets.shape
    # the video is lossy, so compare with the frames it was made of loosely (JPEG-like: a few grey levels)
    assert np.abs(frames.astype(float) - rainy[:5]).mean() < 8.0
    write_clip(tmp_path / 'mixed', rainy[:3])
    write_image(tmp_path / 'mixed' / '999.png', rainy[0][:48])
    with pytest.raises(DatasetError, match='differ in size'):
        RealRainClips(tmp_path / 'mixed')
