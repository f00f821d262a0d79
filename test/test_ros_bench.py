"""Smoke test of the node-overhead benchmark (timings are reported, never asserted)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip('rclpy', reason='needs rclpy (ROS 2 PyPI wheels or a ROS install)')

pytestmark = pytest.mark.ros


def test_bench_node_writes_every_encoding(ros_env: dict[str, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from rainmamba_ros.bench import node as bench_node
    from rainmamba_ros.conversions import SUPPORTED_ENCODINGS

    out = tmp_path / 'bench.json'
    assert bench_node.main(['--width', '64', '--height', '48', '--repeats', '3',
                            '--json', str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data['per_encoding']) == set(bench_node.ENCODINGS)
    assert set(data['conversions']) == set(SUPPORTED_ENCODINGS)
    printed = capsys.readouterr().out
    for enc, row in data['per_encoding'].items():
        assert set(row) == {'callback', 'in', 'out', 'publish', 'total'}
        # Each stage does real work (a check, a conversion, a publish): a median of 0 means
        # the clock was not read around it.
        assert all(row[k] > 0 for k in ('callback', 'in', 'out', 'publish')), (enc, row)
        assert row['total'] == pytest.approx(row['callback'] + row['in'] + row['out']
                                             + row['publish'])
        # The table shows the JSON's numbers, in its column order.
        line = next(x for x in printed.splitlines() if x.split()[:1] == [enc])
        shown = [float(v) for v in line.split()[1:]]
        assert shown == pytest.approx([row[k] for k in ('callback', 'in', 'out', 'publish',
                                                        'total')], abs=5e-4)  # 3 decimals
    assert data['worst_total_ms'] == max(r['total'] for r in data['per_encoding'].values())
    assert f'worst total {data["worst_total_ms"]:.3f} ms' in printed
