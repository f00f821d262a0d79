"""A stand-in camera driver for transport tests, run as its own process:

    python camera_process.py N RATE_HZ WIDTH HEIGHT [TOPIC] [--handshake DIR]

Publishes N rgb8 frames of WIDTH x HEIGHT at RATE_HZ with sensor-data QoS (best effort, as camera
drivers do), each preceded by a camera_info with the same stamp, once a subscriber has matched.
Fast DDS settings come from the environment (FASTDDS_DEFAULT_PROFILES_FILE), as for a real driver.

A matched publisher does not mean a matched subscriber: on a loaded machine the other side may
take seconds to accept this writer, and best effort drops what it sends meanwhile. With
--handshake the counted frames wait for the test: warm-up frames (frame_id 'warmup') go out at
RATE_HZ until DIR/stop exists, DIR/stopped is written after the last of them, and the N counted
frames start when DIR/start exists. The test sees the warm-up arrive, lets the node's counters
settle, and measures the N frames alone.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image


def _wait_for(path: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise SystemExit(f'camera_process: {path} did not appear within {timeout:.0f} s')
        time.sleep(0.02)


def main() -> int:
    args = sys.argv[1:]
    handshake = None
    if '--handshake' in args:
        i = args.index('--handshake')
        handshake = Path(args[i + 1])
        del args[i:i + 2]
    n, rate, w, h = int(args[0]), float(args[1]), int(args[2]), int(args[3])
    topic = args[4] if len(args) > 4 else '/image'
    rclpy.init()
    node = rclpy.create_node('camera_process')
    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, topic.rsplit('/', 1)[0] + '/camera_info',
                                     qos_profile_sensor_data)
    data = np.random.default_rng(0).integers(0, 256, h * w * 3, dtype=np.uint8).tobytes()
    end = time.monotonic() + 60.0
    while (pub.get_subscription_count() == 0 or info_pub.get_subscription_count() == 0) \
            and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(1.0)  # let the match settle on both sides before the first frame

    def send(frame_id: str) -> int:
        msg = Image(height=h, width=w, encoding='rgb8', step=w * 3)
        msg.data = data
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = frame_id
        info = CameraInfo(height=h, width=w)
        info.header = msg.header
        info_pub.publish(info)
        pub.publish(msg)
        time.sleep(1.0 / rate)
        return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

    if handshake is not None:
        warmup = 0
        end = time.monotonic() + 120.0
        while not (handshake / 'stop').exists():
            if time.monotonic() > end:
                raise SystemExit('camera_process: no stop from the test within 120 s of warm-up')
            send('warmup')
            warmup += 1
        (handshake / 'stopped').write_text(str(warmup))
        _wait_for(handshake / 'start', 120.0)
    stamps = [send('camera') for _ in range(n)]
    time.sleep(1.0)
    # The widest step between two sent stamps: a starved camera process sends real gaps.
    widest = max((b - a for a, b in zip(stamps, stamps[1:])), default=0) / 1e9
    print(f'published {n}; widest stamp step {widest:.3f} s', flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
