"""VideoRainDataset: real motion from frame folders, held-out videos, strides, cuts, clean clips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rainmamba_core.data.clips import write_image
from rainmamba_core.data.datasets import DatasetError
from rainmamba_core.data.video_rain import HELDOUT_VIDEOS, VideoRainDataset, find_videos, unsharp_mask


def make_video(folder: Path, frames: int = 20, h: int = 40, w: int = 64, value0: int = 0) -> None:
    """Frame k is a flat grey of value0 + 10 k in the red channel: the frame index is readable."""
    for k in range(frames):
        img = np.full((h, w, 3), 100, np.uint8)
        img[..., 0] = value0 + 10 * k
        write_image(folder / f'{k:05d}.png', img)


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    root = tmp_path / 'videos'
    make_video(root / 'train_a', value0=0)
    make_video(root / 'train_b', value0=5)
    make_video(root / HELDOUT_VIDEOS[0], value0=2)
    return root


def frame_numbers(clip, value0: float) -> np.ndarray:
    """Recover the frame index of each frame of a (T, 3, H, W) [0, 1] tensor (red = value0 + 10 k)."""
    red = clip[:, 0].mean(dim=(1, 2)).numpy() * 255
    return np.round((red - value0) / 10).astype(int)


def test_find_videos_and_the_split(videos: Path) -> None:
    names = [n for n, _ in find_videos([videos])]
    assert names == sorted(['train_a', 'train_b', HELDOUT_VIDEOS[0]])
    train = VideoRainDataset([videos], frames=3, crop=32, split='train')
    held = VideoRainDataset([videos], frames=3, crop=32, split='heldout', train=False)
    assert {n for n, _ in train.videos} == {'train_a', 'train_b'}
    assert [n for n, _ in held.videos] == [HELDOUT_VIDEOS[0]]
    with pytest.raises(DatasetError, match='not a folder'):
        find_videos([videos / 'nope'])
    with pytest.raises(DatasetError, match='stride'):
        VideoRainDataset([videos], stride=(3, 1))


def test_training_clips_follow_a_stride_in_either_direction(videos: Path) -> None:
    ds = VideoRainDataset([videos / 'train_a'], frames=4, crop=16, split='all', stride=(3, 3),
                          clean_prob=1.0, camera=False, cut_prob=0.0, reverse_prob=0.5)
    steps = set()
    for seed in range(12):
        np.random.seed(seed)
        item = ds[0]
        assert item['lq'].shape == (4, 3, 16, 16)
        assert np.array_equal(item['lq'].numpy(), item['gt'].numpy())  # clean_prob=1: input = target
        k = frame_numbers(item['gt'], 0)
        steps.add(tuple(np.diff(k)))
    assert steps == {(3, 3, 3), (-3, -3, -3)}  # forward and reversed, always stride 3


def test_cuts_jump_to_another_scene(videos: Path) -> None:
    ds = VideoRainDataset([videos / 'train_a', videos / 'train_b'], frames=4, crop=16, split='all',
                          stride=(1, 1), clean_prob=1.0, camera=False, cut_prob=1.0, reverse_prob=0.0)
    jumps = 0
    for seed in range(10):
        np.random.seed(seed)
        red = ds[0]['gt'][:, 0].mean(dim=(1, 2)).numpy() * 255
        jumps += int(np.any(np.abs(np.diff(red) - 10) > 1))  # not a plain +1 frame step
    assert jumps >= 8  # a cut lands on the same video at exactly the next frame only by chance


def test_rainy_items_differ_from_clean_and_evaluation_is_deterministic(videos: Path) -> None:
    ev = VideoRainDataset([videos], frames=3, train=False, split='heldout', presets=['storm', 'nturain'],
                          size=(40, 64), eval_stride=2)
    assert len(ev) == 2
    a, b = ev[0], ev[0]
    assert np.array_equal(a['lq'].numpy(), b['lq'].numpy())
    assert a['lq'].shape == (3, 3, 40, 64) and a['key'].split('/')[:2] == [HELDOUT_VIDEOS[0], 'storm']
    assert ev[1]['key'].split('/')[1] == 'nturain'
    assert np.abs(a['lq'].numpy() - a['gt'].numpy()).mean() > 0.01
    assert list(np.diff(frame_numbers(a['gt'], 2))) == [2, 2]


def test_rain_oracle_puts_the_rain_pixels_back_as_they_were_before_the_codec(tmp_path: Path) -> None:
    from rainmamba_core.data.clips import builtin_clip
    root = tmp_path / 'videos'
    for k, frame in enumerate(builtin_clip(6, 96, 128, seed=3)):  # a textured scene for the codec to miss
        write_image(root / HELDOUT_VIDEOS[0] / f'{k:05d}.png', frame)
    common = dict(frames=3, train=False, split='heldout', presets=['nturain', 'storm'], size=(96, 128))
    plain = VideoRainDataset([root], **common)
    with_oracle = VideoRainDataset([root], rain_oracle=True, **common)
    no_camera = VideoRainDataset([root], rain_oracle=True, camera=False, **common)
    for i in range(len(plain)):
        a, b = plain[i], with_oracle[i]
        assert 'oracle' not in a
        # the same draws: input and target do not change when the oracle is asked for
        assert np.array_equal(a['lq'].numpy(), b['lq'].numpy()) and np.array_equal(a['gt'].numpy(), b['gt'].numpy())
        lq, gt, oracle = (b[k].numpy() for k in ('lq', 'gt', 'oracle'))
        assert (oracle != lq).any(axis=1).mean() > 0.05  # the rain's pixels were given back
        # a perfect rain remover is nearer the target than the input (storm's dense rain: by far),
        # but not on it where the codec ran: the target holds the codec's error around the rain
        err, before = np.mean((oracle - gt) ** 2), np.mean((lq - gt) ** 2)
        assert 0 < err < (0.5 if 'storm' in b['key'] else 1.0) * before
        # without the camera's codec there is nothing it cannot see: it is the target
        c = no_camera[i]
        assert np.array_equal(c['oracle'].numpy(), c['gt'].numpy())
    assert 'oracle' not in VideoRainDataset([root], rain_oracle=True, frames=3, split='all', crop=32)[0]  # training


def test_stills_join_training(videos: Path, tmp_path: Path) -> None:
    ds = VideoRainDataset([videos], frames=2, crop=24, still_prob=1.0, builtin_scenes=2)
    np.random.seed(0)
    assert ds[0]['key'].startswith('builtin')
    with pytest.raises(DatasetError, match='still_roots or builtin_scenes'):
        VideoRainDataset([videos], still_prob=0.5)


def test_bases_weight_the_random_rain_looks(videos: Path) -> None:
    def mean_change(bases: dict[str, float]) -> float:
        ds = VideoRainDataset([videos], frames=2, crop=32, split='train', clean_prob=0.0, camera=False,
                              bases=bases)
        changes = []
        for seed in range(6):
            np.random.seed(seed)
            item = ds[0]
            changes.append(float((item['lq'] - item['gt']).abs().mean()))
        return float(np.mean(changes))
    assert mean_change({'storm': 1.0}) > 3 * mean_change({'drizzle': 1.0})
    with pytest.raises(DatasetError, match='bases'):
        VideoRainDataset([videos], bases={'storm': -1.0})
    with pytest.raises(Exception, match='unknown rain preset'):
        VideoRainDataset([videos], bases={'hail': 1.0})


def test_apply_gamma_brightens_below_one_and_keeps_black_and_white() -> None:
    from rainmamba_core.data.video_rain import apply_gamma
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    bright, dark = apply_gamma(ramp, 0.5), apply_gamma(ramp, 2.0)
    assert bright[0, 8, 0, 0] == round(255 * (128 / 255) ** 0.5)  # 181
    assert np.all(np.diff(bright.reshape(-1, 3)[:, 0].astype(int)) >= 0)  # monotone
    assert bright.mean() > ramp.mean() > dark.mean()
    assert bright.reshape(-1, 3)[[0, -1], 0].tolist() == [0, 255]
    assert np.array_equal(apply_gamma(ramp, 1.0), ramp)
    with pytest.raises(DatasetError, match='uint8'):
        apply_gamma(ramp.astype(np.float32), 0.5)


def test_exposure_gamma_changes_input_and_target_alike(videos: Path) -> None:
    def item(**kw):
        ds = VideoRainDataset([videos / 'train_a'], frames=2, crop=16, split='all', clean_prob=1.0,
                              camera=False, cut_prob=0.0, stride=(1, 1), **kw)
        np.random.seed(3)
        return ds[0]
    plain = item()
    assert abs(float(plain['gt'][:, 1].mean()) * 255 - 100) < 0.5  # off by default: the grey stays 100
    bright = item(gamma=(0.5, 0.5), gamma_prob=1.0)
    assert np.array_equal(bright['lq'].numpy(), bright['gt'].numpy())  # clean clip: input = target
    # the test frames are grey 100 in green: gamma 0.5 -> 255 * (100/255) ** 0.5 = 160
    assert abs(float(bright['gt'][:, 1].mean()) * 255 - 160) < 1
    with pytest.raises(DatasetError, match='gamma'):
        VideoRainDataset([videos], gamma=(1.5, 0.4), gamma_prob=0.5)


def test_scene_streaks_are_thin_bright_lines_in_both_input_and_target(videos: Path) -> None:
    from rainmamba_core.data.video_rain import scene_streaks
    from rainmamba_core.eval.suite import thin_line_energy
    grey = np.full((96, 128, 3), 60, np.uint8)  # dark: every look's streaks show over it
    painted = scene_streaks(grey, np.random.default_rng(0), {'moderate': 1.0})
    assert painted.shape == grey.shape and painted.dtype == np.uint8
    assert thin_line_energy(grey[None]) == 0
    assert thin_line_energy(painted[None]) > 0
    # streaks only: no haze, dimming or lens drops (over a flat scene refraction adds light only),
    # and thin ones: most pixels are untouched (moderate rain covers 1-10 % of them)
    assert painted.astype(int).min() >= 60
    assert (np.abs(painted.astype(int) - 60).max(-1) > 2).mean() < 0.2

    def item(prob: float):
        ds = VideoRainDataset([videos], frames=2, crop=32, still_prob=1.0, builtin_scenes=1, clean_prob=1.0,
                              camera=False, scene_streak_prob=prob, bases={'moderate': 1.0})
        np.random.seed(7)
        return ds[0]
    plain, streaked = item(0.0), item(1.0)
    assert np.array_equal(streaked['lq'].numpy(), streaked['gt'].numpy())  # part of the scene: kept
    assert not np.array_equal(streaked['gt'].numpy(), plain['gt'].numpy())
    with pytest.raises(DatasetError, match='scene_streak_prob'):
        VideoRainDataset([videos], scene_streak_prob=1.5)


def test_rot90_stands_the_scene_s_lines_upright_before_the_rain(tmp_path: Path) -> None:
    folder = tmp_path / 'lines' / 'road'
    for k in range(6):                     # a bright horizontal line (a kerb) on row 8 of 32
        img = np.full((32, 32, 3), 40, np.uint8)
        img[8] = 220
        write_image(folder / f'{k:05d}.png', img)

    def gt(prob: float, seed: int) -> np.ndarray:
        ds = VideoRainDataset([tmp_path / 'lines'], frames=2, crop=32, split='all', zoom=(1.0, 1.0),
                              clean_prob=1.0, camera=False, cut_prob=0.0, rot90_prob=prob)
        np.random.seed(seed)
        item = ds[0]
        assert np.array_equal(item['lq'].numpy(), item['gt'].numpy())   # clean: input = target
        return item['gt'][0, 1].numpy() * 255                           # first frame, green

    for seed in range(4):
        flat = gt(0.0, seed)
        assert flat[8].min() > 200 and flat[:, 8].max() > 200 and flat[:, 8].min() < 60  # a row
        upright = gt(1.0, seed)
        cols = [x for x in range(32) if upright[:, x].min() > 200]
        assert cols in ([8], [23]), f'seed {seed}: expected one bright column (8 or 23), got {cols}'
        assert all(upright[y].min() < 60 for y in range(32)), 'no bright row is left'
    with pytest.raises(DatasetError, match='rot90_prob'):
        VideoRainDataset([tmp_path / 'lines'], rot90_prob=-0.1)


def test_sharpen_crisps_the_scene_s_edges_before_the_rain(tmp_path: Path) -> None:
    folder = tmp_path / 'edge' / 'road'
    for k in range(6):                     # a soft step from 60 to 180 grey levels at column 16
        img = np.full((32, 32, 3), 60, np.uint8)
        img[:, 16:] = 180
        img[:, 15], img[:, 16] = 90, 150
        write_image(folder / f'{k:05d}.png', img)

    def gt(prob: float, seed: int, **kw) -> np.ndarray:
        ds = VideoRainDataset([tmp_path / 'edge'], frames=2, crop=32, split='all', zoom=(1.0, 1.0),
                              clean_prob=1.0, camera=False, cut_prob=0.0, sharpen_prob=prob, **kw)
        np.random.seed(seed)
        item = ds[0]
        assert np.array_equal(item['lq'].numpy(), item['gt'].numpy())   # clean: input = target
        return np.round(item['gt'][0, 1].numpy() * 255)                 # first frame, green

    for seed in range(3):
        soft, sharp = gt(0.0, seed), gt(1.0, seed, sharpen=(1.0, 1.0))
        assert np.ptp(soft) == 120 and soft.min() == 60                # untouched: no overshoot
        # an unsharp mask overshoots on both sides of the edge (a flip may mirror it) ...
        assert sharp.min() < 55 and sharp.max() > 185, (seed, sharp.min(), sharp.max())
        # ... and leaves the flat parts alone
        assert np.array_equal(sharp[:, :8] if sharp[0, 0] < 100 else sharp[:, -8:], np.full((32, 8), 60.0))
    # amount 0 is the identity; a bad range or probability is refused by name
    clip = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(unsharp_mask(clip, 0.0, 1.0), clip)
    with pytest.raises(DatasetError, match='sharpen_prob'):
        VideoRainDataset([tmp_path / 'edge'], sharpen_prob=2.0)
    with pytest.raises(DatasetError, match='sharpen'):
        VideoRainDataset([tmp_path / 'edge'], sharpen=(1.5, 0.5))
    with pytest.raises(DatasetError, match='uint8'):
        unsharp_mask(clip.astype(np.float32), 1.0, 1.0)
