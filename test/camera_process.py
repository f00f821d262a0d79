"""A stand-in camera driver for transport tests, run as its own process:

    python camera_process.py N RATE_HZ WIDTH HEIGHT [TOPIC]

Publishes N rgb8 frames of WIDTH x HEIGHT at RATE_HZ with sensor-data QoS (best effort, as camera
drivers do), each preceded by a camera_info with the same stamp, once a subscriber has matched.
Fast DDS settings come from the environment (FASTDDS_DEFAULT_PROFILES_FILE), as for a real driver.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image


def main() -> int:
    n, rate, w, h = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    topic = sys.argv[5] if len(sys.argv) > 5 else '/image'
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
    stamps: list[int] = []
    for _ in range(n):
        msg = Image(height=h, width=w, encoding='rgb8', step=w * 3)
        msg.data = data
        msg.header.stamp = node.get_clock().now().to_msg()
        stamps.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
        msg.header.frame_id = 'camera'
        info = CameraInfo(height=h, width=w)
        info.header = msg.header
        info_pub.publish(info)
        pub.publish(msg)
        time.sleep(1.0 / rate)
    time.sleep(1.0)
    # The widest step between two sent stamps: a starved camera process sends real gaps.
    widest = max((b - a for a, b in zip(stamps, stamps[1:])), default=0) / 1e9
    print(f'published {n}; widest stamp step {widest:.3f} s', flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
