"""Issue 15, item 5: the node's smaller defects, each pinned by a test that failed before.

- a 16-bit PNG sent as compressed input was squeezed to 8 bits and derained: now refused;
- output_rate_hz read 0.000 for streams slower than ~0.4 Hz while frames flowed;
- "cv_bridge unavailable" was logged at INFO on every start;
- a --params-file that names no file gave a raw traceback;
- the launch file ran on defaults when params_file named no file, and emulated a terminal (colour
  codes) even when its output was redirected.
"""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from rainmamba_ros import conversions
from rainmamba_ros.conversions import ImageConversionError, compressed_to_rgb
from rainmamba_ros.stats import RateMeter

ROOT = Path(__file__).resolve().parents[1]


class Compressed:
    def __init__(self, fmt: str, data: bytes) -> None:
        self.format, self.data = fmt, data


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode('.png', img)
    assert ok
    return buf.tobytes()


# ------------------------------------------------------------------------------ compressed depth
def test_sixteen_bit_png_is_refused_like_raw_16uc1() -> None:
    depth = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300)
    with pytest.raises(ImageConversionError) as err:
        compressed_to_rgb(Compressed('16UC1; png compressed 16UC1', _png(depth)))
    assert err.value.kind == 'encoding'
    assert 'uint16' in str(err.value) and 'expected 8-bit' in str(err.value)


@pytest.mark.parametrize('channels', [1, 3, 4])
def test_eight_bit_png_still_decodes_to_rgb(channels: int) -> None:
    rng = np.random.default_rng(channels)
    bgr = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    stored = {1: bgr[..., 0], 3: bgr, 4: np.dstack([bgr, np.full((10, 14), 9, np.uint8)])}[channels]
    rgb = compressed_to_rgb(Compressed('png', _png(stored)))
    # independent expectation: grey replicated, colour channel order reversed, alpha dropped
    want = np.repeat(bgr[..., :1], 3, axis=2) if channels == 1 else bgr[..., ::-1]
    np.testing.assert_array_equal(rgb, want)


# ------------------------------------------------------------------------------ slow rates
def test_rate_of_a_slow_stream_is_not_zero_while_it_flows() -> None:
    meter = RateMeter(window_s=5.0)
    for i in range(4):
        meter.tick(100.0 + 5.0 * i)           # 0.2 Hz: at most one event per 5 s window
    assert meter.rate(116.0) == pytest.approx(0.2)     # 1 s after the last frame
    assert meter.rate(119.9) == pytest.approx(0.2)     # still within the frame period
    assert meter.rate(125.0) == pytest.approx(0.1)     # 10 s quiet: decays as 1/quiet
    assert meter.rate(131.0) == 0.0                    # quiet for > 3 intervals: stopped


# ------------------------------------------------------------------------------ cv_bridge log
def test_missing_cv_bridge_is_not_news_at_info(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(conversions, '_BRIDGE_PROBED', False)
    monkeypatch.setattr(conversions, '_BRIDGE', None)
    monkeypatch.setitem(sys.modules, 'cv_bridge', None)   # import fails, as without a ROS install
    with caplog.at_level(logging.DEBUG, logger=conversions._LOG.name):
        assert conversions.conversion_backend() == 'numpy'
    said = [r for r in caplog.records if 'cv_bridge unavailable' in r.getMessage()]
    assert [r.levelno for r in said] == [logging.DEBUG], [(r.levelname, r.getMessage()) for r in said]


# ------------------------------------------------------------------------------ --params-file
def test_missing_params_file_is_one_line_error(tmp_path: Path, ros_env: dict[str, str]) -> None:
    exe = Path(sys.executable).parent / 'derain_node'
    if not exe.exists():
        pytest.fail('console script derain_node is not installed: run `pip install -e .`')
    proc = subprocess.run([str(exe), '--ros-args', '--params-file', 'derain.yaml'], cwd=tmp_path,
                          env=ros_env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert 'Traceback' not in out, out
    assert f'--params-file derain.yaml: no such file (relative to {tmp_path})' in out, out


# ------------------------------------------------------------------------------ launch file
def _stub_launch(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Minimal stand-ins for ROS `launch`/`launch_ros` (not on PyPI), enough to run `_node`."""
    nodes: list[dict[str, Any]] = []

    class LaunchConfiguration:
        def __init__(self, name: str) -> None:
            self.name = name

        def perform(self, context: Any) -> str:
            return context.launch_configurations[self.name]

    class Context:
        def __init__(self) -> None:
            self.launch_configurations: dict[str, str] = {}

    def node(**kw: Any) -> dict[str, Any]:
        nodes.append(kw)
        return kw

    mods = {
        'launch': dict(LaunchContext=Context, LaunchDescription=list),
        'launch.actions': dict(DeclareLaunchArgument=lambda *a, **k: None,
                               OpaqueFunction=lambda **k: None),
        'launch.substitutions': dict(LaunchConfiguration=LaunchConfiguration,
                                     PathJoinSubstitution=lambda parts: parts),
        'launch_ros': {},
        'launch_ros.actions': dict(Node=node),
        'launch_ros.substitutions': dict(FindPackageShare=lambda name: name),
    }
    for name, attrs in mods.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    return nodes


def _run_node(monkeypatch: pytest.MonkeyPatch, params_file: str) -> list[dict[str, Any]]:
    nodes = _stub_launch(monkeypatch)
    spec = importlib.util.spec_from_file_location('derain_launch_stubbed',
                                                  ROOT / 'launch' / 'derain.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    context = sys.modules['launch'].LaunchContext()
    context.launch_configurations.update({
        'namespace': '', 'params_file': params_file, 'image': '/front/image_raw',
        'camera_info': '/front/camera_info', 'use_sim_time': 'false', 'model_path': '',
        'device': '', 'transport_profile': ''})
    module._node(context)
    return nodes


def test_launch_refuses_a_params_file_that_is_not_there(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r'params_file:=.*nope\.yaml is not a file'):
        _run_node(monkeypatch, str(tmp_path / 'nope.yaml'))


def test_launch_emulates_a_terminal_only_for_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, 'isatty', lambda: False)
    (node,) = _run_node(monkeypatch, str(ROOT / 'config' / 'derain.yaml'))
    assert node['emulate_tty'] is False, 'redirected output must not get colour codes'
    assert node['parameters'][0] == str(ROOT / 'config' / 'derain.yaml')
    monkeypatch.setattr(sys.stdout, 'isatty', lambda: True)
    (node,) = _run_node(monkeypatch, str(ROOT / 'config' / 'derain.yaml'))
    assert node['emulate_tty'] is True


# ------------------------------------------------------------------------------ OpenCV's log
def test_undecodable_frames_do_not_flood_stderr_with_opencv_errors(
        ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    """Five undecodable PNGs: the node counts each (rejected.decode) and logs at most one line per
    error_throttle_s; OpenCV used to print its own ERROR line for every one of them."""
    from sensor_msgs.msg import CompressedImage
    from test_ros_live import CarriedCountBackend, LiveNode

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING)  # OpenCV's default
    run = LiveNode(monkeypatch, CarriedCountBackend(), input_transport='compressed',
                   image_topic='/image/compressed')
    try:
        for _ in range(5):
            msg = CompressedImage(format='png')
            msg.data = b'\x89PNG\r\n\x1a\n' + b'\x00' * 64     # a PNG signature, then nothing valid
            run.pub.publish(msg)
            run.wait(lambda: False, 0.2)   # one at a time: keep-latest would merge them
        assert run.wait(lambda: run.values().get('rejected.decode') == '5'), run.values()
    finally:
        run.close()
    err = capfd.readouterr().err
    assert 'grfmt_png' not in err, err[-1500:]
