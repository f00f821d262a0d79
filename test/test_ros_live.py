"""The live robot path of the derain node (issue 15): the carried state survives frames the node
skips, frames below the model's minimum are refused without touching the state, and the output
lands beside the input whatever the remap.

The node runs in this process on a private context and a private ROS domain, with a stand-in
model whose output is the number of frames its state has carried since the last reset, so the
tests read the state off the derained pixels. The stand-in may sleep to act as a slow model.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='needs rclpy (ROS 2 PyPI wheels or a ROS install)')

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from rainmamba_ros.conversions import as_msg_data, rgb_to_compressed, rgb_to_image_fields  # noqa: E402

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
H, W = 24, 32
TIMEOUT = 60.0   # waits end as soon as the condition holds; a starved process needs long ones


class CarriedCountBackend:
    """Streaming stand-in: the state counts the frames stepped since the last reset; every output
    pixel equals that count (mod 256). `delay_s` makes it a model slower than the camera."""

    name = 'standin'
    device = 'cpu'
    streaming = True
    window = 2

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.steps = 0

    def new_state(self, height: int, width: int) -> int:
        return 0

    def step(self, frames: np.ndarray, states: list) -> tuple[np.ndarray, list, list[bool]]:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.steps += len(frames)
        new = [s + 1 for s in states]
        out = np.stack([np.full(f.shape, n % 256, np.uint8) for f, n in zip(frames, new)])
        return out, new, [True] * len(new)


def make_image(h: int, w: int, encoding: str, stamp_ns: int) -> Image:
    rgb = np.full((h, w, 3), 100, np.uint8)
    flat, step = rgb_to_image_fields(rgb, encoding)
    msg = Image(height=h, width=w, encoding=encoding, step=step)
    msg.data = as_msg_data(flat)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = 'cam'
    return msg


class LiveNode:
    """A DerainNode with a stand-in model and a peer node in one private context."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, backend: Any, cli_args: list[str] | None = None,
                 image_topic: str = '/image', out_topic: str = '/derained/image', **params: Any) -> None:
        from rclpy.parameter import Parameter
        from ros_spin import BackgroundSpin

        from rainmamba_core.streaming.derainer import Derainer
        from rainmamba_ros.derain_node import DerainNode

        # The stand-in replaces the model the node would build from its parameters.
        # (the Derainer settings the node has; older nodes judged gaps in the Derainer)
        monkeypatch.setattr(DerainNode, '_build_derainer', lambda self, cfg: Derainer(
            backend=backend, **{k: cfg[k] for k in ('max_pixels', 'gap_reset_s') if k in cfg}))
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        overrides = [Parameter('input_reliability', value='reliable'),
                     Parameter('input_depth', value=100),
                     Parameter('diagnostics_period_s', value=60.0)]  # reports only on request
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.node = DerainNode(context=self.ctx, parameter_overrides=overrides,
                               cli_args=cli_args)
        self.peer = rclpy.create_node('live_peer', context=self.ctx)
        self.spin = BackgroundSpin(self.ctx, [self.node, self.peer])
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.got: list[Image] = []
        self.peer.create_subscription(Image, out_topic, self.got.append, reliable)
        msg_type = CompressedImage if params.get('input_transport') == 'compressed' else Image
        self.pub = self.peer.create_publisher(msg_type, image_topic, reliable)
        assert self.wait(lambda: self.pub.get_subscription_count() > 0
                         and self.peer.count_publishers(out_topic) > 0, TIMEOUT), \
            f'the node did not subscribe {image_topic} and publish {out_topic}'

    @staticmethod
    def wait(pred: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        from ros_spin import wait_until
        return wait_until(pred, timeout)

    def values(self) -> dict[str, str]:
        status = self.node.diagnostics()[0]
        return {kv.key: kv.value for kv in status.values}

    def close(self) -> None:
        self.spin.close()


@pytest.fixture
def live(ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    made: list[LiveNode] = []

    def start(backend: Any, **kw: Any) -> LiveNode:
        made.append(LiveNode(monkeypatch, backend, **kw))
        return made[-1]

    yield start
    for run in made:
        run.close()


def _carried(msg: Image) -> int:
    return int(msg.data[0])


# ------------------------------------------------------------------------------ item 2: gaps
def test_slow_model_keeps_the_state_and_a_real_pause_resets_it_once(live: Callable) -> None:
    """Inference (0.8 s) far longer than the frame period (0.1 s) and than gap_reset_s (0.5 s):
    the node skips ~7 of 8 frames, so processed frames are >= 0.8 s apart in stamp time. Gaps
    must be judged between frames the camera sent (0.1 s apart): no reset while it streams; a
    3 s pause in the camera's stamps is one reset."""
    backend = CarriedCountBackend(delay_s=0.8)
    run = live(backend, gap_reset_s=0.5)
    period_ns = 10**8
    t0 = run.peer.get_clock().now().nanoseconds

    def stream(first: int, n: int, offset_ns: int) -> int:
        for i in range(first, first + n):
            stamp = t0 + offset_ns + i * period_ns
            run.pub.publish(make_image(H, W, 'rgb8', stamp))
            time.sleep(0.1)
        return stamp

    last = stream(0, 30, 0)
    assert run.wait(lambda: any(_stamp(m) == last for m in run.got)), 'the newest frame never came out'
    resets = run.node.resets()
    processed = len(run.got)
    # 30 frames over >= 3 s at <= 0.8 s per inference: at most ~5 processed, so most were skipped
    assert 2 <= processed < 15, f'{processed} frames processed: the model was not slower than the camera'
    assert resets['gap'] == 0 and resets['time_backwards'] == 0, \
        f'the state was reset while the camera streamed without a pause: {resets}'
    assert _carried(run.got[-1]) == processed, \
        f'state carried over {_carried(run.got[-1])} processed frames, expected all {processed}'
    # every frame received was either processed or replaced by a newer one before the worker took it
    assert int(run.values()['dropped']) == 30 - processed, run.values()

    time.sleep(1.0)                                  # the camera really stops ...
    last = stream(30, 10, 3 * 10**9)                 # ... and its stamps resume 3 s later
    assert run.wait(lambda: any(_stamp(m) == last for m in run.got)), 'the newest frame never came out'
    resets = run.node.resets()
    assert resets['gap'] == 1, f'expected exactly one gap reset after the pause, got {resets}'
    after = len(run.got) - processed
    assert _carried(run.got[-1]) == after, \
        f'after the pause the state should have restarted: carried {_carried(run.got[-1])}, expected {after}'
    assert run.values()['resets.gap'] == '1'


def _stamp(msg: Image) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_stamps_going_back_between_skipped_frames_reset_once(live: Callable) -> None:
    """A bag loop while the worker is busy: the jump back happens between two frames the node
    never processed, and is still seen (and counted as time_backwards, not as a gap)."""
    backend = CarriedCountBackend(delay_s=0.6)
    run = live(backend, gap_reset_s=0.5)
    t0 = run.peer.get_clock().now().nanoseconds + 100 * 10**9
    stamps = [t0 + i * 10**8 for i in range(8)] + [t0 - 50 * 10**9 + i * 10**8 for i in range(8)]
    for stamp in stamps:
        run.pub.publish(make_image(H, W, 'rgb8', stamp))
        time.sleep(0.1)
    assert run.wait(lambda: any(_stamp(m) == stamps[-1] for m in run.got))
    resets = run.node.resets()
    assert (resets['time_backwards'], resets['gap']) == (1, 0), resets


# ------------------------------------------------------------------------------ item 4: sizes
def test_frames_below_the_minimum_are_rejected_without_touching_the_state(live: Callable) -> None:
    backend = CarriedCountBackend()
    run = live(backend)
    t0 = run.peer.get_clock().now().nanoseconds
    stamp = [t0]

    def send(h: int, w: int, encoding: str = 'rgb8') -> None:
        stamp[0] += 10**7
        run.pub.publish(make_image(h, w, encoding, stamp[0]))

    for _ in range(2):
        send(H, W)
        n = len(run.got) + 1
        assert run.wait(lambda: len(run.got) == n)
    small = [(1, 1, 'rgb8'), (7, 3, 'rgb8'), (8, 7, 'bgr8'), (1, 2, 'yuv422'), (7, 64, 'mono8')]
    for h, w, enc in small:
        send(h, w, enc)
    assert run.wait(lambda: int(run.values().get('rejected.size', 0)) == len(small)), run.values()
    send(H, W)
    assert run.wait(lambda: len(run.got) == 3)
    v = run.values()
    assert v['inference_errors'] == '0' and v['resets_total'] == '0', v
    assert _carried(run.got[-1]) == 3, 'rejected frames must not reset the carried state'
    assert int(v['received']) == 3 + len(small) and v['rejected'] == str(len(small)), v
    assert 'smaller than the model takes' in v['last_error'] and '8x8' in v['last_error'], v['last_error']
    assert backend.steps == 3   # nothing small ever reached the model


def test_small_compressed_frame_is_rejected_and_counted_once(live: Callable) -> None:
    backend = CarriedCountBackend()
    run = live(backend, input_transport='compressed', image_topic='/image/compressed')
    msg = CompressedImage(format='png')
    msg.data = rgb_to_compressed(np.zeros((4, 6, 3), np.uint8), 'png')
    run.pub.publish(msg)
    assert run.wait(lambda: run.values().get('rejected.size') == '1'), run.values()
    v = run.values()
    # one message: one received (it used to be counted again when the worker rejected it)
    assert (v['received'], v['rejected'], v['inference_errors']) == ('1', '1', '0'), v


def test_auto_pixel_budget_is_said_at_start(live: Callable) -> None:
    run = live(CarriedCountBackend())
    assert run.node._derainer.max_pixels == 640 * 480   # stand-in device 'cpu': the CPU budget
    assert 'auto on cpu' in run.node._derainer.size_bound


# ------------------------------------------------------------------------------ item 3: topics
def test_output_lands_beside_the_remapped_input(live: Callable) -> None:
    run = live(CarriedCountBackend(), cli_args=['--ros-args', '-r', 'image:=/front/image_raw',
                                                '-r', 'camera_info:=/front/camera_info'],
               image_topic='/front/image_raw', out_topic='/front/derained/image')
    assert run.peer.count_publishers('/front/derained/camera_info') == 1
    assert run.peer.count_publishers('/derained/image') == 0, 'output still in the node namespace'
    run.pub.publish(make_image(H, W, 'rgb8', run.peer.get_clock().now().nanoseconds))
    assert run.wait(lambda: len(run.got) == 1), 'no frame on /front/derained/image'


def test_readme_launch_command_names_the_topics_the_node_publishes(live: Callable) -> None:
    """The README's `ros2 launch` line remaps image and camera_info; the topics it says come out
    must be the ones a node with exactly those remaps publishes."""
    readme = (ROOT / 'README.md').read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith('ros2 launch rainmamba_ros'))
    remaps = dict(re.findall(r'(image|camera_info):=(\S+)', line))
    assert set(remaps) == {'image', 'camera_info'}, line
    cli = ['--ros-args'] + [a for k, v in remaps.items() for a in ('-r', f'{k}:={v}')]
    run = live(CarriedCountBackend(), cli_args=cli, image_topic=remaps['image'],
               out_topic='/front/derained/image')
    named = set(re.findall(r'`(/[\w/]*derained/[\w]+)`', readme.split('## On a robot', 1)[1].split('\n## ')[0]))
    published = {n for n, _ in run.node.get_publisher_names_and_types_by_node(
        run.node.get_name(), run.node.get_namespace()) if 'derained' in n}
    assert named and named == published, f'README names {named}, the node publishes {published}'


def test_derained_topics_beside_input() -> None:
    from rainmamba_ros.node_messages import derained_topics
    assert derained_topics('/front/image_raw') == ('/front/derained/image', '/front/derained/camera_info')
    assert derained_topics('/front/image_raw/compressed')[0] == '/front/derained/image'
    assert derained_topics('/image') == ('/derained/image', '/derained/camera_info')
    assert derained_topics('/robot/rear/image')[0] == '/robot/rear/derained/image'


def test_camera_info_is_republished_beside_the_output(live: Callable) -> None:
    run = live(CarriedCountBackend(), cli_args=['--ros-args', '-r', 'image:=/cam1/image_raw',
                                                '-r', 'camera_info:=/cam1/camera_info'],
               image_topic='/cam1/image_raw', out_topic='/cam1/derained/image')
    infos: list[CameraInfo] = []
    run.peer.create_subscription(CameraInfo, '/cam1/derained/camera_info', infos.append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    info_pub = run.peer.create_publisher(CameraInfo, '/cam1/camera_info', 10)
    assert run.wait(lambda: info_pub.get_subscription_count() > 0)
    msg = make_image(H, W, 'rgb8', run.peer.get_clock().now().nanoseconds)
    info = CameraInfo(height=H, width=W)
    info.header = msg.header
    info_pub.publish(info)
    time.sleep(0.3)   # camera_info first, as drivers do; the image is then paired with it
    run.pub.publish(msg)
    assert run.wait(lambda: len(infos) == 1 and len(run.got) == 1)
    assert infos[0].header.stamp == msg.header.stamp


# ------------------------------------------------------------------------------ diagnostics
class GatedBackend(CarriedCountBackend):
    """Blocks inside `step` until `gate` is set: a model stuck in a long inference."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def step(self, frames: np.ndarray, states: list) -> tuple[np.ndarray, list, list[bool]]:
        self.entered.set()
        self.gate.wait()
        return super().step(frames, states)


def test_diagnostics_answer_while_the_model_runs(live: Callable) -> None:
    backend = GatedBackend()
    run = live(backend)
    try:
        run.pub.publish(make_image(H, W, 'rgb8', run.peer.get_clock().now().nanoseconds))
        assert backend.entered.wait(TIMEOUT), 'the worker never reached the model'
        answered: list[Any] = []
        probe = threading.Thread(target=lambda: answered.append(run.node.diagnostics()), daemon=True)
        probe.start()
        probe.join(5.0)   # an inference here lasts until the gate opens: any wait is a block
        assert answered, '/diagnostics blocked until the inference in progress ended'
        assert {kv.key: kv.value for kv in answered[0][0].values}['received'] == '1'
    finally:
        backend.gate.set()
