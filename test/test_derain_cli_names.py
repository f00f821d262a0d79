"""`rainmamba derain` keeps the input frames' names and streams frames disk to disk.

A stand-in backend (output = input with R, G, B rotated, so every output pixel is known) replaces
the model: these tests are about files, names and order, not deraining quality.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rainmamba_core.data.clips import read_image, write_image
from rainmamba_core.streaming import derainer as derainer_mod
from rainmamba_ros import cli


class RotateBackend:
    name, device, streaming, window = 'standin', 'cpu', True, 2

    def new_state(self, height: int, width: int) -> int:
        return 0

    def step(self, frames: np.ndarray, states: list) -> tuple[np.ndarray, list, list[bool]]:
        return frames[..., [1, 2, 0]], states, [True] * len(states)


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Derainer built by the CLI gets the stand-in; returns a log of events in order."""
    events: list[str] = []
    monkeypatch.setattr(derainer_mod, 'load_backend', lambda *a, **k: RotateBackend())
    real_process = derainer_mod.Derainer.process

    def process(self, sid, frame, stamp_ns=None):
        events.append(f'derain {int(frame[0, 0, 0])}')
        return real_process(self, sid, frame, stamp_ns)

    monkeypatch.setattr(derainer_mod.Derainer, 'process', process)
    import rainmamba_core.data.clips as clips
    real_read, real_write = clips.read_image, clips.write_image
    monkeypatch.setattr(clips, 'read_image', lambda p: (events.append(f'read {Path(p).name}'),
                                                          real_read(p))[1])
    monkeypatch.setattr(clips, 'write_image', lambda p, img: (events.append(f'write {Path(p).name}'),
                                                                real_write(p, img))[1])
    return events


def _frame(i: int) -> np.ndarray:
    f = np.full((16, 24, 3), 10 * i, np.uint8)
    f[..., 1] = 7
    return f


def test_output_frames_keep_the_input_names(tmp_path: Path, standin: list[str]) -> None:
    src = tmp_path / 'rainy'
    names = ['00001.png', '00002.png', '00003.jpg', '00010.png']   # starts at 1, one jpg, a jump
    for i, name in enumerate(names, start=1):
        write_image(src / name, _frame(i))
    assert cli.main(['derain', str(src), str(tmp_path / 'out')]) == 0
    got = sorted(p.name for p in (tmp_path / 'out').iterdir())
    assert got == ['00001.png', '00002.png', '00003.png', '00010.png'], \
        f'output names {got} should be the input stems (as .png), not positions 00000...'
    out = read_image(tmp_path / 'out' / '00002.png')
    np.testing.assert_array_equal(out, _frame(2)[..., [1, 2, 0]])  # frame 2 landed under its own name


def test_frames_stream_from_disk_to_disk(tmp_path: Path, standin: list[str]) -> None:
    src = tmp_path / 'rainy'
    for i in range(1, 5):
        write_image(src / f'f{i}.png', _frame(i))
    standin.clear()
    assert cli.main(['derain', str(src), str(tmp_path / 'out')]) == 0
    # Each frame is read, derained and written before the next one is read: nothing is held.
    expected = [e for i in range(1, 5) for e in (f'read f{i}.png', f'derain {10 * i}', f'write f{i}.png')]
    assert standin == expected, standin


def test_video_output_and_max_frames(tmp_path: Path, standin: list[str]) -> None:
    src = tmp_path / 'rainy'
    for i in range(1, 6):
        write_image(src / f'{i:05d}.png', _frame(i))
    out = tmp_path / 'out.mp4'
    assert cli.main(['derain', str(src), str(out), '--max-frames', '3']) == 0
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 3


def test_missing_input_is_one_line_error(tmp_path: Path, standin: list[str],
                                         capsys: pytest.CaptureFixture) -> None:
    assert cli.main(['derain', str(tmp_path / 'nope'), str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('rainmamba derain: error:') and 'no such file or folder' in err
    assert len(err.strip().splitlines()) == 1


def test_readme_command_table_lists_every_verb() -> None:
    readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
    table = readme.split('## The `rainmamba` command', 1)[1].split('\n## ', 1)[0]
    listed = {line.split('`rainmamba ', 1)[1].split()[0].rstrip('`')
              for line in table.splitlines() if line.startswith('| `rainmamba ')}
    assert listed == set(cli.VERBS), f'README table lists {sorted(listed)}, the CLI has {sorted(cli.VERBS)}'
