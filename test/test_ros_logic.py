"""The node's pure logic: keep-latest slots, rate/latency stats, diagnostics levels, parameter
validation, and the YAML / docs / parameter table staying in step. No ROS graph needed."""
from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from rainmamba_ros.latest import LatestFrames
from rainmamba_ros.params import (
    DEFAULTS,
    DERAINER_KEYS,
    PARAMS,
    ParameterError,
    derainer_kwargs,
    validate_all,
    validate_one,
)
from rainmamba_ros.stats import CameraStats, LatencyWindow, RateMeter, assess

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ LatestFrames
def test_latest_keeps_only_the_newest_and_counts_drops() -> None:
    slots: LatestFrames[int] = LatestFrames()
    assert slots.put('a', 1) is False
    assert slots.put('a', 2) is True
    assert slots.put('a', 3) is True
    assert slots.put('b', 10) is False
    assert slots.take_all(timeout=0) == {'a': 3, 'b': 10}
    assert slots.dropped == {'a': 2}
    assert slots.take_all(timeout=0) == {}


def test_latest_wakes_a_waiting_worker() -> None:
    slots: LatestFrames[str] = LatestFrames()
    got: list[dict] = []
    worker = threading.Thread(target=lambda: got.append(slots.take_all(timeout=10.0)))
    worker.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    slots.put('cam', 'frame')
    worker.join(timeout=5.0)
    assert got == [{'cam': 'frame'}]
    assert time.monotonic() - t0 < 5.0  # woken by put, not by the 10 s timeout


def test_latest_close_releases_the_worker_and_clear_does_not_count() -> None:
    slots: LatestFrames[int] = LatestFrames()
    slots.put('a', 1)
    assert slots.clear() == 1 and len(slots) == 0 and slots.dropped == {}
    worker = threading.Thread(target=slots.take_all, kwargs={'timeout': 30.0})
    worker.start()
    slots.close()
    worker.join(timeout=5.0)
    assert not worker.is_alive()


# ------------------------------------------------------------------------------ stats
def test_rate_meter() -> None:
    meter = RateMeter(window_s=5.0)
    for i in range(11):
        meter.tick(100.0 + 0.1 * i)           # 10 Hz for 1 s
    assert meter.rate(101.0) == pytest.approx(10.0)
    # Events leave the window: a stopped stream decays to 0.
    assert meter.rate(110.0) == 0.0


def test_latency_window_percentiles() -> None:
    lat = LatencyWindow(maxlen=100)
    assert math.isnan(lat.percentile(50))
    for v in range(1, 101):
        lat.add(float(v))
    assert lat.percentile(50) == 50.0 and lat.percentile(99) == 99.0
    assert lat.percentile(100) == 100.0
    lat.add(1000.0)  # maxlen: the oldest sample (1) leaves
    assert len(lat) == 100 and lat.percentile(0) == 2.0


def test_camera_stats_snapshot() -> None:
    stats = CameraStats()
    stats.on_input('bgr8', 64, 48)
    stats.on_reject('length', 'image data has 3 bytes')
    stats.on_drop()
    stats.on_publish(12.0, 5.0)
    stats.on_error('boom', published=False)
    snap = stats.snapshot()
    assert snap['received'] == 2 and snap['rejected'] == 1 and snap['rejected.length'] == 1
    assert snap['dropped'] == 1 and snap['published'] == 1 and snap['skipped'] == 1
    assert snap['latency_p50_ms'] == 12.0 and snap['inference_p50_ms'] == 5.0
    assert snap['resolution'] == '64x48' and snap['last_error'] == 'boom'


def _snap(**kw: float | int | str) -> dict:
    base = {'input_rate_hz': 10.0, 'output_rate_hz': 10.0, 'latency_p99_ms': 50.0,
            'seconds_since_input': 0.1, 'last_error': ''}
    base.update(kw)
    return base


@pytest.mark.parametrize('snap, errors, rejected, level, words', [
    (_snap(), 0, 0, 'OK', 'deraining at 10.0 Hz'),
    (_snap(output_rate_hz=3.0), 0, 0, 'WARN', 'falling behind'),
    (_snap(latency_p99_ms=900.0), 0, 0, 'WARN', 'latency p99 900 ms > 250 ms'),
    (_snap(last_error='bad step'), 0, 4, 'WARN', 'rejected 4 messages: bad step'),
    (_snap(last_error='CUDA OOM'), 2, 0, 'ERROR', '2 inference failures: CUDA OOM'),
    (_snap(input_rate_hz=0.0, output_rate_hz=0.0, seconds_since_input=60.0), 0, 0, 'OK', 'idle'),
])
def test_assess_levels(snap: dict, errors: int, rejected: int, level: str, words: str) -> None:
    got_level, message = assess(snap, latency_warn_ms=250.0, rate_warn_ratio=0.9, enabled=True,
                                errors_since_last=errors, rejected_since_last=rejected)
    assert got_level == level and words in message, message


# ------------------------------------------------------------------------------ parameters
def test_defaults_are_valid() -> None:
    validate_all(dict(DEFAULTS))


@pytest.mark.parametrize('name, value, reason', [
    ('mode', 'fast', "mode='fast' is not one of streaming, windowed"),
    ('window', 0, 'window=0 is outside [1, 64]'),
    ('window', 2.5, 'has type float, expected int'),
    ('enabled', 1, 'has type int, expected bool'),
    ('device', 'gpu0', "device='gpu0' is not auto, cpu, cuda or cuda:N"),
    ('gap_reset_s', 0.0, 'gap_reset_s=0.0 is outside [0.001, 3600.0]'),
    ('cameras', [], 'cameras is empty'),
    ('cameras', ['a', 'a'], 'lists a namespace twice'),
    ('cameras', ['front/'], "'front/' is not a valid ROS namespace"),
    ('cameras', ['1cam'], "'1cam' is not a valid ROS namespace"),
    ('input_reliability', 'sometimes', 'is not one of best_effort, reliable'),
    ('model_path', 'model.tflite', 'should be a .pt/.pth checkpoint or an .onnx file'),
])
def test_validate_one_refuses_with_reason(name: str, value: object, reason: str) -> None:
    with pytest.raises(ParameterError) as err:
        validate_one(name, value)
    assert reason in str(err.value)


def test_validate_one_accepts_good_values() -> None:
    validate_one('device', 'cuda:1')
    validate_one('cameras', ['', 'front', '/robot/rear', 'cam_2'])
    validate_one('gap_reset_s', 2)        # an int where a float is expected is fine
    validate_one('qos_overrides./image.publisher.depth', 3)  # not ours: left to rclpy


@pytest.mark.parametrize('changes, reason', [
    ({'precision': 'fp16', 'device': 'cpu'}, "needs a CUDA device, but device='cpu'"),
    ({'backend': 'onnxruntime', 'model_path': 'm.pt'}, 'needs an .onnx model_path'),
    ({'mode': 'windowed', 'window': 1}, 'needs window >= 2'),
])
def test_validate_all_checks_combinations(changes: dict, reason: str) -> None:
    values = dict(DEFAULTS, **changes)
    with pytest.raises(ParameterError, match=re.escape(reason)):
        validate_all(values)
    validate_all(dict(DEFAULTS, precision='fp16', device='cuda'))  # fine on CUDA


def test_derainer_kwargs_map_the_model_parameters() -> None:
    kw = derainer_kwargs(dict(DEFAULTS))
    assert set(kw) == set(DERAINER_KEYS)
    assert kw['model_path'] is None  # '' = the bundled default
    assert kw['max_pixels'] == -1  # auto: the device's pixel budget
    assert 'gap_reset_s' not in kw  # judged by the node on received stamps, not by the Derainer


def test_derainer_kwargs_match_the_derainer_signature() -> None:
    import inspect

    derainer = pytest.importorskip('rainmamba_core.streaming.derainer')
    accepted = set(inspect.signature(derainer.Derainer.__init__).parameters)
    assert set(DERAINER_KEYS) <= accepted


def test_every_parameter_says_how_it_changes() -> None:
    for spec in PARAMS:
        assert spec.change in ('live', 'reload', 'restart'), spec.name
        assert spec.description.endswith('.'), spec.name
    reload = {p.name for p in PARAMS if p.change == 'reload'}
    assert reload == set(DERAINER_KEYS)  # exactly the Derainer's constructor arguments


# ------------------------------------------------------------------------------ config and docs
def test_yaml_lists_every_parameter_with_its_default() -> None:
    data = yaml.safe_load((ROOT / 'config' / 'derain.yaml').read_text())
    params = data['/**']['ros__parameters']
    assert set(params) == set(DEFAULTS)
    for name, default in DEFAULTS.items():
        assert params[name] == default, name
        assert type(params[name]) is type(default), f'{name}: YAML type must match (1.0 not 1)'


def test_yaml_comments_document_every_parameter() -> None:
    lines = (ROOT / 'config' / 'derain.yaml').read_text().splitlines()
    for spec in PARAMS:
        idx = next(i for i, line in enumerate(lines) if line.strip().startswith(f'{spec.name}:'))
        assert lines[idx - 1].strip().startswith('#'), f'{spec.name} has no comment above it'
        block = []
        j = idx - 1
        while lines[j].strip().startswith('#'):
            block.append(lines[j])
            j -= 1
        assert f'[{spec.change}]' in ' '.join(block), f'{spec.name}: comment lacks [{spec.change}]'


def test_docs_list_every_parameter() -> None:
    doc = (ROOT / 'docs' / 'ros.md').read_text()
    for spec in PARAMS:
        assert f'`{spec.name}`' in doc, f'docs/ros.md does not document {spec.name}'
