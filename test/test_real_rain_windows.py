"""scripts/real_rain_windows.py (the model card's 50-frame real-rain tables) on a small look-alike of
shared/data made here."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from rainmamba_core.data.clips import builtin_clip, write_image
from rainmamba_core.data.synthetic_rain import add_rain
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'real_rain_windows.py'


def _script():
    spec = importlib.util.spec_from_file_location('real_rain_windows', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, clip: np.ndarray) -> None:
    for k, frame in enumerate(clip):
        write_image(folder / f'{k:05d}.png', frame)


def test_windows_cover_every_frame_and_the_numbers_are_written(tmp_path: Path, capsys) -> None:
    shared = tmp_path / 'data'
    rain = add_rain(builtin_clip(5, 48, 64, seed=3), 'heavy', seed=2)
    _write(shared / 'nturain_a2' / 'a2_Rain', rain.rainy[:3])
    _write(shared / 'nturain_a2' / 'a2_GT', rain.clean[:3])
    _write(shared / 'real_rain_yard' / 'rain', rain.rainy)
    RainMamba(RainMambaConfig.tiny()).save_checkpoint(tmp_path / 'm.pt')
    out = tmp_path / 'r.json'
    assert _script().main([str(tmp_path / 'm.pt'), '--shared-data', str(shared), '--window', '2',
                           '--json', str(out)]) == 0
    data = json.loads(out.read_text())
    assert data['windows'] == [[0, 2], [2, 5]]  # the last window takes the remainder
    row = data['models'][str(tmp_path / 'm.pt')]
    assert len(row['lines_left_windows']) == 2
    assert row['lines_left_mean'] == pytest.approx(np.mean(row['lines_left_windows']))
    assert all(np.isfinite(row[k]) for k in ('a2_gain_db', 'rain_lines_left', 'scene_lines_kept',
                                             'a2_clean_kept_db', 'a2_clean_kept_worst_db'))
    assert row['a2_clean_kept_worst_db'] <= row['a2_clean_kept_db']
    # the per-window split adds up to the whole clip's: the line sums are over disjoint frames
    assert len(row['rain_lines_left_windows']) == len(row['scene_lines_kept_windows']) == 2
    lo, hi = min(row['rain_lines_left_windows']), max(row['rain_lines_left_windows'])
    assert lo - 1e-6 <= row['rain_lines_left'] <= hi + 1e-6
    assert 'rain lines left' in capsys.readouterr().out


def test_a_missing_data_folder_is_named(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _script().main(['default', '--shared-data', str(tmp_path)])
    assert exc.value.code == 2
    assert str(tmp_path / 'real_rain_yard' / 'rain') in capsys.readouterr().err


def test_your_own_rainy_frames_instead_of_the_yard(tmp_path: Path) -> None:
    shared = tmp_path / 'data'
    rain = add_rain(builtin_clip(4, 48, 64, seed=5), 'heavy', seed=4)
    _write(shared / 'nturain_a2' / 'a2_Rain', rain.rainy[:2])
    _write(shared / 'nturain_a2' / 'a2_GT', rain.clean[:2])
    _write(tmp_path / 'mine', rain.rainy)          # no real_rain_yard under shared at all
    RainMamba(RainMambaConfig.tiny()).save_checkpoint(tmp_path / 'm.pt')
    out = tmp_path / 'r.json'
    assert _script().main([str(tmp_path / 'm.pt'), '--shared-data', str(shared), '--rainy-frames',
                           str(tmp_path / 'mine'), '--window', '3', '--json', str(out)]) == 0
    assert json.loads(out.read_text())['windows'] == [[0, 4]]  # one window: 4 frames, the remainder joins it
