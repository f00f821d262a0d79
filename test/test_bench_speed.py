"""bench_speed: the side-by-side runner works end to end on a tiny size (timings never asserted)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from rainmamba_core.bench import speed as bench_speed


def _has_reference() -> bool:
    if shutil.which('git') is None:
        return False
    return all(subprocess.run(['git', '-C', str(bench_speed.PACKAGE_ROOT), 'cat-file', '-e', rev],
                              capture_output=True).returncode == 0
               for rev in (bench_speed.REFERENCE_REV, f'{bench_speed.WEIGHTS_REV}:{bench_speed.WEIGHTS_PATH}'))


@pytest.mark.skipif(not _has_reference(), reason='needs git and the repository history (28443b7, and the default '
                                                 'model as of a8df05a)')
def test_side_by_side_rows_table_and_json(tmp_path, capsys):
    args = type('Args', (), dict(sizes='64x48', frames=1, weights=None, reference=bench_speed.REFERENCE_REV,
                                 no_onnx=False, threads=1, memory_frames=3, memory_size='64x48',
                                 json=tmp_path / 'speed.json'))()
    result = bench_speed.run(args)
    row = result['rows'][0]
    assert result['weights'].startswith(bench_speed.WEIGHTS_REV)  # one the reference revision can read
    assert row['size'] == '64x48' and row['this_ms'] > 0 and row[f'{bench_speed.REFERENCE_REV}_ms'] > 0
    # Same weights, same frames: this checkout's step equals the reference revision's (fp32 rounding).
    assert row[f'rel_diff_vs_{bench_speed.REFERENCE_REV}'] < 1e-5
    assert row['rel_diff_ort'] < 1e-4 and row['onnxruntime_ms'] > 0  # the exported step runs beside them
    assert [r['frames'] for r in result['memory']['rows']] == [3]
    out = capsys.readouterr().out
    assert 'speed-up vs' in out and 'memory (64x48)' in out
    assert json.loads((tmp_path / 'speed.json').read_text())['rows'][0]['size'] == '64x48'
