"""Smoke test of the node-overhead benchmark (timings are reported, never asserted)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip('rclpy', reason='needs rclpy (ROS 2 PyPI wheels or a ROS install)')

pytestmark = pytest.mark.ros


def test_bench_node_writes_every_encoding(ros_env: dict[str, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from rainmamba_ros import bench_node
    from rainmamba_ros.conversions import SUPPORTED_ENCODINGS

    out = tmp_path / 'bench.json'
    assert bench_node.main(['--width', '64', '--height', '48', '--repeats', '3',
                            '--json', str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data['per_encoding']) == set(bench_node.ENCODINGS)
    assert set(data['conversions']) == set(SUPPORTED_ENCODINGS)
    for row in data['per_encoding'].values():
        assert set(row) == {'callback', 'in', 'out', 'publish', 'total'}
        assert row['total'] == pytest.approx(row['callback'] + row['in'] + row['out']
                                             + row['publish'])
    assert 'worst total' in capsys.readouterr().out
