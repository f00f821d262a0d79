"""Large camera images over the shipped transport, process to process (issue 15, item 1).

Three processes as on a robot: a camera driver (test/camera_process.py) publishing 640x480 rgb8
with sensor-data QoS, the derain node started from its console script with config/derain.yaml,
and this test process subscribing to the node's output with Fast DDS defaults. The node runs with
`enabled:=false` (frames passed through unchanged): its output is as large as a derained frame,
the transport is the same, and no model time hides a loss.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

rclpy = pytest.importorskip('rclpy', reason='needs rclpy (ROS 2 PyPI wheels or a ROS install)')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'
START_TIMEOUT = 300.0   # ends when the node reports; a starved node took 136 s to import torch here
N_FRAMES, RATE_HZ = 40, 5.0
# Shared memory only, with a segment far smaller than one image: camera_info (a few hundred
# bytes) always crosses it; a 900 KiB image, 57 fragments through a 64 KiB segment, almost never
# does (0 of 20 and 2 of 10 seen). Heavy loss by construction, not by chance.
TINY_PROFILE = '''<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>tiny_shm</transport_id>
      <type>SHM</type>
      <segment_size>65536</segment_size>
      <maxMessageSize>16384</maxMessageSize>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="tiny" is_default_profile="true">
    <rtps>
      <userTransports><transport_id>tiny_shm</transport_id></userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
'''


def _without_profiles(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items()
            if k not in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')}


COUNTERS = ('received', 'published', 'dropped', 'camera_info_received', 'images_missing')


def _camera(env: dict[str, str], profile: Path, n: int, handshake: Path) -> subprocess.Popen:
    handshake.mkdir()
    return subprocess.Popen(
        [sys.executable, str(ROOT / 'test' / 'camera_process.py'), str(n), str(RATE_HZ), '640', '480',
         '--handshake', str(handshake)],
        env=dict(env, FASTDDS_DEFAULT_PROFILES_FILE=str(profile)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_large_frames_arrive_and_their_output_is_delivered(ros_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    if 'FASTDDS_DEFAULT_PROFILES_FILE' in os.environ or 'FASTRTPS_DEFAULT_PROFILES_FILE' in os.environ:
        pytest.skip('a Fast DDS profile is set for the test process: it must use the defaults')
    env = _without_profiles(ros_env)
    exe = Path(sys.executable).parent / 'derain_node'
    log = tmp_path / 'node.log'
    with open(log, 'wb') as out:
        node = subprocess.Popen(
            [str(exe), '--ros-args', '--params-file', str(ROOT / 'config' / 'derain.yaml'),
             '-p', 'enabled:=false', '-p', 'diagnostics_period_s:=0.5', '-p', 'device:=cpu'],
            env=dict(env, PYTHONUNBUFFERED='1'), stdout=out, stderr=subprocess.STDOUT)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    sub_node = rclpy.create_node('transport_test', context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(sub_node)
    got: list[str] = []   # frame_id of every output delivered here ('warmup' or 'camera')
    diags: dict[str, Any] = {}
    loss_warnings: list[str] = []   # every 'input loss' WARN reported (a later report may be OK)
    # Best effort, the demanding side (a viewer on sensor-data QoS): only a transport that
    # carries the large sample whole delivers it.
    sub_node.create_subscription(Image, '/derained/image', lambda m: got.append(m.header.frame_id),
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT))

    def on_diag(msg: DiagnosticArray) -> None:
        diags.update({st.name: st for st in msg.status})
        loss_warnings.extend(st.message for st in msg.status
                             if st.level == DiagnosticStatus.WARN and 'input loss' in st.message)

    sub_node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)

    def spin_until(pred: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            executor.spin_once(timeout_sec=0.05)
        return pred()

    def values() -> dict[str, str]:
        status = diags.get('derain_node: /image')
        return {kv.key: kv.value for kv in status.values} if status else {}

    def counts() -> dict[str, int]:
        v = values()
        return {k: int(v.get(k, 0)) for k in COUNTERS}

    def settled() -> dict[str, int]:
        """The node's counters once two reports 1.2 s apart agree (the camera is silent)."""
        end = time.monotonic() + 60.0
        before = counts()
        while time.monotonic() < end:
            spin_until(lambda: False, 1.2)   # > the 1 s loss grace and two diagnostics periods
            now = counts()
            if now == before:
                return now
            before = now
        raise AssertionError(f'the node\'s counters kept moving with the camera silent: {values()}')

    def warm_up(cam: subprocess.Popen, hs: Path, warmed: Any) -> dict[str, int]:
        """Let the camera send warm-up frames until `warmed(counts())` holds; then stop it and
        return the node's settled counters. Its counted frames start on `hs / 'start'`.

        Discovery is not what is measured: a subscriber may accept the camera's writer seconds
        after the camera's publisher saw it match (seen on CI: 12 of 40 frames, images and
        camera_info alike, lost at the start). The warm-up frames cover that time."""
        assert spin_until(lambda: cam.poll() is not None or warmed(counts()), 150.0), \
            f'the warm-up did not reach the node: {values()}'
        assert cam.poll() is None, cam.stdout.read() if cam.stdout else ''
        (hs / 'stop').touch()
        assert spin_until(lambda: (hs / 'stopped').exists() or cam.poll() is not None, 60.0)
        base = settled()
        base['outputs'] = got.count('camera')   # counted frames delivered here so far
        base['warmup_sent'] = int((hs / 'stopped').read_text())
        return base

    def run_to_end(cam: subprocess.Popen, hs: Path) -> None:
        (hs / 'start').touch()
        assert spin_until(lambda: cam.poll() is not None, 180.0), 'camera did not finish'
        assert cam.returncode == 0, cam.stdout.read() if cam.stdout else ''

    cameras: list[subprocess.Popen] = []
    try:
        assert spin_until(lambda: node.poll() is not None or 'derain_node: /image' in diags,
                          START_TIMEOUT), f'node did not report:\n{log.read_text()}'
        assert node.poll() is None, log.read_text()
        assert 'transport: Fast DDS profile' in log.read_text() and PROFILE.name in log.read_text()

        # Phase 1: the camera follows the docs (the shipped profile exported for the driver).
        cameras.append(_camera(env, PROFILE, N_FRAMES, tmp_path / 'hs1'))
        # a steady stream first (5 frames in), then the N counted frames
        base = warm_up(cameras[0], tmp_path / 'hs1',
                       lambda c: c['received'] >= 5 and c['camera_info_received'] >= 5)
        run_to_end(cameras[0], tmp_path / 'hs1')
        spin_until(lambda: False, 2.0)   # the last frames through the node and two reports
        v = values()
        d = {k: int(v[k]) - base[k] for k in COUNTERS}
        received, published = d['received'], d['published']
        # What the transport decides: whether a frame's 900 KiB image arrives when its camera_info
        # (a few hundred bytes, same stamp) did. A node starved of CPU on a 2-core machine also
        # loses frames from its reader's 5-deep queue, images and infos alike (CI: 7 and 12 of 40
        # after ~1 s stalls, latency p99 1.0 s); that is not the transport, so the 95 % bar
        # applies to the frames whose camera_info arrived.
        infos = d['camera_info_received']
        assert infos - d['images_missing'] >= 0.95 * infos, f'images lost in transport: {d}, {v}'
        assert received >= N_FRAMES // 2, f'the stream hardly ran: {received} of {N_FRAMES} frames: {d}, {v}'
        # Every output the node published reached this process. (A starved worker may skip
        # frames under keep-latest even in passthrough: those are counted as dropped.)
        delivered = got.count('camera') - base['outputs']
        assert delivered == published, \
            f'{delivered} outputs delivered to another process, {published} published'
        assert published + d['dropped'] == received, (d, v)
        assert d['camera_info_received'] <= N_FRAMES, (d, v)

        # Phase 2: a driver on a deliberately tiny transport: camera_info arrives, images do not.
        # Its warm-up is the measurement: it runs until 5 images are missing (by construction
        # nearly all are; see TINY_PROFILE); a tiny segment kept busy may later stall camera_info
        # too, so no counted frames follow.
        tiny = tmp_path / 'tiny.xml'
        tiny.write_text(TINY_PROFILE)
        cameras.append(_camera(env, tiny, 0, tmp_path / 'hs2'))
        before = settled()
        end = warm_up(cameras[1], tmp_path / 'hs2',
                      lambda c: c['images_missing'] - before['images_missing'] >= 5)
        run_to_end(cameras[1], tmp_path / 'hs2')
        lost = end['images_missing'] - before['images_missing']
        arrived = end['received'] - before['received']
        # no image counted both ways (a camera_info lost too leaves its image in neither)
        assert lost + arrived <= end['warmup_sent'], (before, end)
        text = log.read_text()
        assert 'images never arrived although their camera_info did' in text, text[-2000:]
        assert 'export FASTDDS_DEFAULT_PROFILES_FILE=' in text
        assert text.count('images never arrived') == 1, 'the WARN is throttled to one line a minute'
        assert loss_warnings, f'no input-loss WARN in /diagnostics: {values()}'
        assert 'FASTDDS_DEFAULT_PROFILES_FILE' in loss_warnings[0], loss_warnings[0]
    finally:
        for cam in cameras:
            if cam.poll() is None:
                cam.kill()
            cam.wait()
        executor.shutdown()
        sub_node.destroy_node()
        rclpy.shutdown(context=ctx)
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


# ------------------------------------------------------------------------------ pure logic
def test_input_loss_monitor_counts_images_whose_camera_info_came_alone() -> None:
    from rainmamba_ros.stats import InputLossMonitor

    m = InputLossMonitor(grace_s=1.0)
    for i in range(5):                       # paired: image and info share the stamp
        m.on_info(i, now=100.0 + i)
        if i != 3:                           # image 3 lost on the way
            m.on_image(i)
    assert m.missing(now=103.5) == 0         # infos 0..2 settled (1 s grace), all had images
    assert m.missing(now=104.5) == 1         # info 3 settled: its image never came
    assert m.missing(now=110.0) == 1         # 4 had its image
    unpaired = InputLossMonitor(grace_s=1.0)  # a driver stamping info and image differently
    for i in range(5):
        unpaired.on_info(i, now=100.0)
        unpaired.on_image(1000 + i)
    assert unpaired.missing(now=110.0) == 0, 'unpaired stamps are no evidence of loss'
    starved = InputLossMonitor(grace_s=1.0)   # camera_info flows, no image ever arrives
    for i in range(4):
        starved.on_info(i, now=100.0)
    assert starved.missing(now=110.0) == 4


def test_node_applies_the_shipped_profile_unless_one_is_chosen() -> None:
    from rainmamba_ros.transport import PROFILE_VARS, apply_transport_profile

    env: dict[str, str] = {}
    line = apply_transport_profile(env)
    assert env == {'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE.resolve())}, env
    assert 'camera driver needs it too' in line
    for var in PROFILE_VARS:                  # the user's choice (even '' = Fast DDS defaults) stays
        env = {var: ''}
        apply_transport_profile(env)
        assert env == {var: ''}
    env = {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}
    assert 'does not apply' in apply_transport_profile(env) and len(env) == 1
