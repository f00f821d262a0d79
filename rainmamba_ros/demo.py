"""`rainmamba demo` with its ROS stages: the core demo (rainmamba_core.demo), then the rainy clip
written as a bag, replayed offline, and run live through the real node (player -> derain_node ->
recorder) over ROS 2 topics. `--no-ros` stops after the core demo.

The live stage starts `derain_node` as its own process on a private ROS domain restricted to
localhost, publishes the bag's frames at their recorded rate with sensor-data QoS (exactly what a
camera driver does), and records what comes back into a bag. Frames the node cannot keep up
with are dropped by its keep-latest policy; the demo reports how many.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rainmamba_core import demo as core_demo

CAMERA_NS = '/camera'
RAW_TOPIC = f'{CAMERA_NS}/image_raw'
INFO_TOPIC = f'{CAMERA_NS}/camera_info'
FRAME_ID = 'camera_optical_frame'
T0_NS = 1_700_000_000 * 1_000_000_000


def write_rainy_bag(rainy: np.ndarray, path: Path, fps: float = 10.0) -> Path:
    """Rainy frames (T, H, W, 3) RGB -> a ROS 2 MCAP bag with Image + CameraInfo topics."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from rainmamba_ros.conversions import rgb_to_image_fields
    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, CameraInfo = store.types['sensor_msgs/msg/Image'], store.types['sensor_msgs/msg/CameraInfo']
    Header, Time = store.types['std_msgs/msg/Header'], store.types['builtin_interfaces/msg/Time']
    RoI = store.types['sensor_msgs/msg/RegionOfInterest']
    h, w = rainy.shape[1:3]
    f = 0.8 * w
    if path.exists():
        shutil.rmtree(path)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        img_conn = writer.add_connection(RAW_TOPIC, 'sensor_msgs/msg/Image', typestore=store)
        info_conn = writer.add_connection(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo', typestore=store)
        for i, frame in enumerate(rainy):
            t = T0_NS + int(round(i * 1e9 / fps))
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id=FRAME_ID)
            data, step = rgb_to_image_fields(frame, 'rgb8')
            img = Image(header=header, height=h, width=w, encoding='rgb8', is_bigendian=0, step=step,
                        data=np.asarray(data, dtype=np.uint8))
            info = CameraInfo(header=header, height=h, width=w, distortion_model='plumb_bob',
                              d=np.zeros(5), k=np.array([f, 0, w / 2, 0, f, h / 2, 0, 0, 1.0]),
                              r=np.eye(3).ravel(), p=np.array([f, 0, w / 2, 0, 0, f, h / 2, 0, 0, 0, 1.0, 0]),
                              binning_x=0, binning_y=0,
                              roi=RoI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            writer.write(img_conn, t, store.serialize_cdr(img, 'sensor_msgs/msg/Image'))
            writer.write(info_conn, t, store.serialize_cdr(info, 'sensor_msgs/msg/CameraInfo'))
    return path


def run_replay(bag: Path, out: Path, model: str | None, device: str) -> dict[str, Any]:
    from rainmamba_ros.replay import replay_bag
    summary = replay_bag(bag, out, [RAW_TOPIC], overwrite=True, progress=False,
                         derainer_kwargs={'model_path': model, 'device': device})
    return {'frames': summary.total_frames, 'fps': summary.fps, 'x_realtime': summary.realtime_factor,
            'copied_messages': summary.copied_messages, 'output': str(out),
            'topics': summary.output_topics}


def _derain_node_command() -> list[str]:
    exe = shutil.which('derain_node') or str(Path(sys.executable).with_name('derain_node'))
    return [exe] if Path(exe).exists() else [sys.executable, '-m', 'rainmamba_ros.derain_node']


def run_live(rainy: np.ndarray, out_dir: Path, model: str | None, device: str, fps: float = 10.0,
             start_timeout: float = 120.0) -> dict[str, Any]:
    """Player -> derain_node (subprocess) -> recorder, on a private localhost ROS domain."""
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(random.randint(101, 199))
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, Image

    log_path = out_dir / 'derain_node.log'
    cmd = _derain_node_command() + ['--ros-args', '-r', f'__ns:={CAMERA_NS}', '-r', 'image:=image_raw',
                                    '-p', f'device:={device}']
    if model:
        cmd += ['-p', f'model_path:={model}']
    with open(log_path, 'w') as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    rclpy.init()
    node = rclpy.create_node('rainmamba_demo_player')
    received: list[tuple[Image, int]] = []
    infos: list[CameraInfo] = []
    node.create_subscription(Image, f'{CAMERA_NS}/derained/image',
                             lambda m: received.append((m, time.monotonic_ns())), 10)
    node.create_subscription(CameraInfo, f'{CAMERA_NS}/derained/camera_info', infos.append, 10)
    pub = node.create_publisher(Image, RAW_TOPIC, qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, INFO_TOPIC, qos_profile_sensor_data)
    sent: dict[int, int] = {}
    try:
        deadline = time.monotonic() + start_timeout
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline and proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.2)
        if pub.get_subscription_count() == 0:
            raise RuntimeError(f'derain_node did not subscribe within {start_timeout:.0f} s (log: {log_path})')
        h, w = rainy.shape[1:3]
        period = 1.0 / fps
        t_next = time.monotonic()
        for i, frame in enumerate(rainy):
            stamp = T0_NS + int(round(i * 1e9 / fps))
            msg = Image(height=h, width=w, encoding='rgb8', is_bigendian=0, step=w * 3)
            msg.header.stamp.sec, msg.header.stamp.nanosec = stamp // 10**9, stamp % 10**9
            msg.header.frame_id = FRAME_ID
            msg.data = frame.tobytes()
            info = CameraInfo(height=h, width=w)
            info.header = msg.header
            sent[stamp] = time.monotonic_ns()
            info_pub.publish(info)
            pub.publish(msg)
            t_next += period
            while time.monotonic() < t_next:
                rclpy.spin_once(node, timeout_sec=max(0.0, t_next - time.monotonic()))
        quiet_until = time.monotonic() + 15.0
        last_count = -1
        while time.monotonic() < quiet_until:  # wait for the last in-flight frame
            rclpy.spin_once(node, timeout_sec=0.2)
            if len(received) != last_count:
                last_count = len(received)
                quiet_until = min(quiet_until, time.monotonic() + 5.0)
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    latencies = []
    for msg, t_recv in received:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if stamp in sent:
            latencies.append((t_recv - sent[stamp]) / 1e6)
    record = out_dir / 'live_bag'
    _record(record, [(m, serialize_message(m)) for m, _ in received])
    stamps_ok = all(m.header.frame_id == FRAME_ID and m.encoding == 'rgb8' for m, _ in received)
    return {'published': len(rainy), 'derained': len(received), 'dropped': len(rainy) - len(received),
            'camera_info_republished': len(infos), 'header_and_encoding_kept': stamps_ok,
            'latency_ms_p50': float(np.percentile(latencies, 50)) if latencies else None,
            'latency_ms_max': float(max(latencies)) if latencies else None, 'recorded': str(record),
            'node_log': str(log_path)}


def _record(path: Path, messages: list[tuple[Any, bytes]]) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(Stores.ROS2_HUMBLE)
    if path.exists():
        shutil.rmtree(path)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(f'{CAMERA_NS}/derained/image', 'sensor_msgs/msg/Image', typestore=store)
        for msg, raw in messages:
            writer.write(conn, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, raw)


def run_stages(rainy: np.ndarray, out_dir: Path, model: str | None = None, device: str = 'auto') -> dict:
    """Bag -> replay -> live node; prints a summary line per stage and returns the numbers."""
    import json
    result: dict[str, Any] = {}
    bag = write_rainy_bag(rainy, out_dir / 'rainy_bag')
    print(f'[demo] wrote {bag} ({len(rainy)} frames on {RAW_TOPIC} + {INFO_TOPIC})')
    rep = run_replay(bag, out_dir / 'derained_bag', model, device)
    result['replay'] = rep
    print(f"[demo] replay: {rep['frames']} frames -> {out_dir / 'derained_bag'} "
          f"({rep['fps']:.1f} frames/s, {rep['x_realtime']:.2f}x real time; "
          f"{rep['copied_messages']} messages copied unchanged)")
    try:
        import rclpy  # noqa: F401
    except ImportError as exc:
        print(f'[demo] live node stage skipped: rclpy is not importable ({exc})')
    else:
        try:
            live = run_live(rainy, out_dir, model, device)
            result['live'] = live
            lat = live['latency_ms_p50']
            print(f"[demo] live node: published {live['published']}, derained {live['derained']}, dropped "
                  f"{live['dropped']} (keep-latest), latency p50 "
                  f"{'n/a' if lat is None else f'{lat:.0f} ms'}; header+encoding kept: "
                  f"{live['header_and_encoding_kept']}; recorded {live['recorded']}")
        except Exception as exc:  # the demo reports a failed stage instead of hiding it
            result['live'] = {'error': str(exc)}
            print(f'[demo] live node stage FAILED: {exc}')
    (out_dir / 'ros_stages.json').write_text(json.dumps(result, indent=2, default=str))
    return result


def ros_stages(args: argparse.Namespace, rainy: np.ndarray, out_dir: Path) -> None:
    """The demo stage the core demo runs last: bag, replay, live node (when rclpy imports)."""
    try:
        run_stages(rainy, out_dir, model=args.model, device=args.device)
    except ImportError as exc:  # rosbags missing: the core demo's outputs stand on their own
        print(f'[demo] ROS stages skipped: {exc}')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    core_demo.add_arguments(parser)
    parser.add_argument('--no-ros', action='store_true', help='skip the bag / replay / live-node stages')


def run(args: argparse.Namespace) -> int:
    return core_demo.run(args, stages=() if args.no_ros else (ros_stages,))
