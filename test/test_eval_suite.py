"""The generalisation suite on a small shared/data look-alike made here (no ../shared needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rainmamba_core.data.clips import builtin_clip, write_image
from rainmamba_core.data.synthetic_rain import add_rain
from rainmamba_core.data.video_rain import HELDOUT_VIDEOS
from rainmamba_core.eval.evaluate import EvalError
from rainmamba_core.eval.suite import (
    SuiteOptions,
    brightness_error,
    line_map,
    per_frame_fn,
    real_rain_masks,
    run_suite,
    target_for,
    thin_line_energy,
    write_suite_report,
)


def write_frames(folder: Path, clip: np.ndarray) -> None:
    for k, frame in enumerate(clip):
        write_image(folder / f'{k:05d}.png', frame)


@pytest.fixture(scope='module')
def fake_shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder names of ../shared/data, with small procedural clips."""
    d = tmp_path_factory.mktemp('shared') / 'data'
    clean = builtin_clip(4, 48, 64, seed=11)
    rain = add_rain(clean, 'heavy', seed=1)
    write_frames(d / 'nturain_a2' / 'a2_Rain', rain.rainy)
    write_frames(d / 'nturain_a2' / 'a2_GT', rain.clean)
    grey = rain.rainy.mean(-1, keepdims=True).astype(np.uint8).repeat(3, -1)
    write_frames(d / 'paired_pmog_pedestrian' / 'rain', grey)
    write_frames(d / 'paired_pmog_pedestrian' / 'gt', rain.clean.mean(-1, keepdims=True).astype(np.uint8).repeat(3, -1))
    write_frames(d / 'clean_video_udacity' / HELDOUT_VIDEOS[0], builtin_clip(10, 48, 64, seed=12))
    write_frames(d / 'clean_video_udacity' / 'some_training_video', builtin_clip(10, 48, 64, seed=13))
    write_frames(d / 'clean_video_intel' / HELDOUT_VIDEOS[1], builtin_clip(10, 48, 64, seed=14))
    write_frames(d / 'real_rain_yard' / 'rain', rain.rainy[:2])
    return d


def options(shared: Path) -> SuiteOptions:
    return SuiteOptions(shared_data=shared, frames=3, size=(32, 48), presets=("nturain", "storm"), clean_frames=2)


def test_identity_and_darkening_models_score_as_they_must(fake_shared: Path, tmp_path: Path) -> None:
    models = {'identity': lambda clip: clip,
              'darker': lambda clip: np.clip(clip.astype(int) - 6, 0, 255).astype(np.uint8)}
    res = run_suite(models, options(fake_shared), progress=lambda _: None)
    rows = res['rows']
    # the identity is the rainy input: no gain anywhere, clean frames come back exactly (100 = cap)
    for row, vals in rows.items():
        if 'gain' in row:
            assert vals['identity'] == pytest.approx(0.0, abs=1e-9), row
    assert rows['clean output vs input, worst frame (dB)']['identity'] == 100.0
    assert rows['streamed minus per-frame, stride 4 (dB)']['identity'] == pytest.approx(0.0, abs=1e-9)
    # every pixel 6 grey levels darker (the scenes have no pixel below 6): a 6-level brightness
    # error more than the identity's (which is the rain's own brightening), and 32.6 dB on clean
    b = rows['brightness error, mean (grey levels)']
    assert b['darker'] != pytest.approx(b['identity'])
    assert rows['clean output vs input, mean (dB)']['darker'] == pytest.approx(20 * np.log10(255 / 6), abs=0.05)
    # a2's clean frames alone: the same two answers, and only for the models
    a2_clean = rows['nturain_a2 clean frames, output vs input, mean (dB)']
    assert set(a2_clean) == {'identity', 'darker'}
    assert a2_clean['identity'] == 100.0
    assert a2_clean['darker'] == pytest.approx(20 * np.log10(255 / 6), abs=0.05)
    assert rows['nturain_a2 clean frames, output vs input, worst frame (dB)']['darker'] <= a2_clean['darker']
    assert set(res['per_set']) >= {'nturain_a2', 'pedestrian', 'video/nturain', 'video/storm',
                                   'video_stride4/storm', 'clean', 'real_rain_yard'}
    # real rain has no ground truth: the identity leaves every line and changes nothing; the
    # darker model changes every pixel by 6 and (lines measured against their neighbours) keeps them
    lines = rows['real_rain_yard thin bright lines left (%)']
    change = rows['real_rain_yard mean change (grey levels)']
    assert lines['identity'] == pytest.approx(100.0) and change['identity'] == 0.0
    assert rows['real_rain_yard rain lines left (%)']['identity'] == pytest.approx(100.0)
    assert rows['real_rain_yard scene lines kept (%)']['identity'] == pytest.approx(100.0)
    assert change['darker'] == pytest.approx(6.0, abs=0.5)
    # the rain oracle: a reference column on the held-out video rows only; it removes the rain
    oracle_rows = [r for r, v in rows.items() if 'rain oracle' in v]
    assert oracle_rows and all(r.startswith('video') or r.startswith('brightness') for r in oracle_rows)
    assert rows['video/storm gain (dB)']['rain oracle'] > 3.0
    paths = write_suite_report(res, tmp_path / 'rep', meta={'models': 'test'})
    md = paths['markdown'].read_text()
    assert '| nturain_a2 gain (dB) |' in md and '>= +1.5 dB' in md
    assert '**rain oracle**' in md
    assert (tmp_path / 'rep' / 'images' / 'real_rain_yard.png').is_file()
    assert (tmp_path / 'rep' / 'suite.json').is_file()


def test_a_model_may_not_take_a_reference_column_s_name(fake_shared: Path) -> None:
    with pytest.raises(EvalError, match='rain oracle'):
        run_suite({'rain oracle': lambda c: c}, options(fake_shared), progress=lambda _: None)


def test_the_stream_start_rows_split_the_video_gain_by_frame_position(fake_shared: Path) -> None:
    # 'late' changes nothing on a clip's first frame and darkens every later one; 'darker' darkens all
    def darken(x: np.ndarray) -> np.ndarray:
        return np.clip(x.astype(int) - 6, 0, 255).astype(np.uint8)
    models = {'late': lambda clip: np.concatenate([clip[:1], darken(clip[1:])]), 'darker': darken}
    opts = options(fake_shared)
    rows = run_suite(models, opts, progress=lambda _: None)['rows']
    first = rows['stream start: held-out videos, first frame gain (dB)']
    later = rows['stream start: held-out videos, later frames gain (dB)']
    assert set(first) == set(later) == set(models)  # models only, not the reference columns
    assert first['late'] == 0.0 and later['late'] != 0.0
    assert later['late'] == pytest.approx(later['darker'])  # the same change on the same frames
    assert first['darker'] != 0.0
    # every clip has the same frames, so first and later frames weighted by count are the video mean
    for m in models:
        whole = (first[m] + (opts.frames - 1) * later[m]) / opts.frames
        assert whole == pytest.approx(rows['video all presets gain (dB)'][m], abs=1e-9), m
    assert target_for('stream start: held-out videos, first frame gain (dB)') == ''


def test_missing_sets_are_named_not_silently_dropped(tmp_path: Path) -> None:
    (tmp_path / 'data').mkdir()
    res = run_suite({'identity': lambda c: c}, options(tmp_path / 'data'), progress=lambda _: None)
    assert any('nturain_a2' in n for n in res['notes']) and any('clean_video' in n for n in res['notes'])


def test_helpers() -> None:
    clip = np.zeros((2, 4, 4, 3), np.uint8)
    out = clip + np.array([3, 5], np.uint8)[:, None, None, None]
    assert brightness_error(out, clip) == [3.0, 5.0]
    calls = []
    per = per_frame_fn(lambda c: calls.append(len(c)) or c)
    assert np.array_equal(per(out), out) and calls == [1, 1]
    assert target_for('video_stride4/storm gain (dB)') == '>= +5 dB'
    assert target_for('video/storm gain (dB)').startswith('>= +6 dB')
    assert target_for('nturain_a2 PSNR (dB)') == ''


def test_suite_cli_with_a_model(fake_shared: Path, tmp_path: Path) -> None:
    import torch

    from rainmamba_core.cli import main
    from rainmamba_core.models.config import RainMambaConfig
    from rainmamba_core.models.rainmamba import RainMamba
    torch.manual_seed(0)
    path = tmp_path / 'tiny.pt'
    RainMamba(RainMambaConfig.tiny(causal=True)).save_checkpoint(path)
    code = main(['eval', '--suite', 'generalisation', '--model', str(path), '--shared-data', str(fake_shared),
                 '--suite-frames', '3', '--suite-size', '32', '48', '--out', str(tmp_path / 'out')])
    assert code == 0
    md = (tmp_path / 'out' / 'suite.md').read_text()
    assert '| row | tiny | rainy input | temporal median | rain oracle | target |' in md  # the model's column
    assert '| clean output vs input, worst frame (dB) |' in md
    code = main(['eval', '--suite', 'generalisation', '--shared-data', str(tmp_path / 'absent'),
                 '--out', str(tmp_path / 'o2')])
    assert code == 2


def test_thin_line_energy_sees_thin_vertical_streaks_not_flat_areas_or_horizontal_edges() -> None:
    flat = np.full((1, 20, 30, 3), 80, np.uint8)
    assert thin_line_energy(flat) == 0.0
    streak = flat.copy()
    streak[0, 3:15, 10:12] = 200                  # a 2-px bright vertical streak
    edge = flat.copy()
    edge[0, 10:, :] = 200                         # a horizontal edge
    assert thin_line_energy(streak) > 12 * 2 * 100  # 12 rows x 2 px x (120 - 10 threshold) ~ 2,600
    assert thin_line_energy(edge) == 0.0
    dimmed = flat.copy()
    dimmed[0, 3:15, 10:12] = 120                  # the same streak at a third of its contrast
    assert 0 < thin_line_energy(dimmed) < 0.3 * thin_line_energy(streak)


def _panning_scene_with_rain(frames: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured scene with a bright 2-px pole, panned 3 px a frame, and new rain streaks in each
    frame; returns the rainy clip, the clip without rain and where the streaks are (T, H, W) bool."""
    rng = np.random.default_rng(4)
    wide = rng.integers(60, 100, (64, 140, 3)).astype(np.uint8)
    wide = np.repeat(np.repeat(wide[::4, ::4], 4, 0), 4, 1)[:64, :140]  # 4-px blocks: no thin lines
    wide[8:56, 70:72] = 220                                              # the pole: scene
    clean = np.stack([wide[:, 3 * t:3 * t + 96] for t in range(frames)])
    clip = clean.copy()
    streaks = np.zeros(clip.shape[:3], bool)
    for t in range(frames):
        for _ in range(12):
            y, x = rng.integers(2, 40), rng.integers(4, 90)
            streaks[t, y:y + 14, x] = True
    clip[streaks] = 200
    return clip, clean, streaks


def test_real_rain_masks_tell_transient_streaks_from_a_persistent_pole() -> None:
    clip, _, streaks = _panning_scene_with_rain()
    lines, rain, scene = real_rain_masks(clip)
    streaks = streaks[:, :, 2:-2]                # the line map drops two columns each side
    pole = np.zeros_like(streaks)
    for t in range(len(clip)):
        pole[t, 10:54, 70 - 3 * t - 2:72 - 3 * t - 2] = True
    # where a streak crosses the pole it is both: leave those pixels out of both checks
    pole, streaks = pole & ~streaks, streaks & ~pole
    # most streak pixels are called rain, almost none of the pole's; the pole is the scene
    assert rain[streaks].mean() > 0.8
    assert rain[pole].mean() < 0.05
    assert scene[pole].mean() > 0.8
    assert scene[streaks].mean() < 0.1
    assert lines.shape == rain.shape == scene.shape == streaks.shape
    with pytest.raises(EvalError, match='T >= 2'):
        real_rain_masks(clip[:1])


def test_the_rain_and_scene_rows_score_a_derainer_and_a_line_eraser_apart() -> None:
    """Taking out only the streaks scores rain ~0 % left, scene ~100 % kept; blurring every line
    away scores low on both; the identity 100 / 100."""
    clip, derained, _ = _panning_scene_with_rain()   # derained: the scene without its rain
    lines, rain, scene = real_rain_masks(clip)
    blurred = np.stack([np.repeat(np.repeat(f[::4, ::4], 4, 0), 4, 1) for f in clip])

    def score(out: np.ndarray, mask: np.ndarray) -> float:
        return 100 * float(line_map(out)[mask].sum()) / float(lines[mask].sum())
    assert score(clip, rain) == pytest.approx(100.0) and score(clip, scene) == pytest.approx(100.0)
    assert score(derained, rain) < 10 and score(derained, scene) > 90
    assert score(blurred, rain) < 30 and score(blurred, scene) < 60
