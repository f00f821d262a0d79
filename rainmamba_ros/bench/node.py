"""Benchmark the derain node's own overhead per frame, excluding inference.

    python -m rainmamba_ros.bench.node --json out/bench_node.json

For each encoding, times the node's real code paths on a 640x480 frame, through its public
seams (worker stopped, frames taken from the mailbox by the benchmark): the subscription
callback (`on_image`: check, stats, timeline, keep-latest store) and `take_received`, the
conversion in (message -> RGB), the conversion out
(RGB -> message bytes and the Image message), and publish + camera_info to one subscriber in
this process. Inference is replaced by passing the RGB array through. Then the conversions alone
for every supported encoding. Prints tables and writes JSON; the target for the node's total is
< 2 ms on the project's 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'mono8', 'yuv422', 'bayer_rggb8')
TARGET_MS = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--repeats', type=int, default=200, help='frames per encoding')
    parser.add_argument('--json', type=Path, default=None, help='write results here')


def bench_node_overhead(width: int = 640, height: int = 480, repeats: int = 200) -> dict[str, Any]:
    """Time the node's own work per frame for every encoding in ENCODINGS; prints the tables.

    Returns:
        The JSON record: per_encoding {encoding: {callback, in, out, publish, total} median ms},
        conversions (every supported encoding), worst_total_ms and the machine.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image

    from rainmamba_ros.bench.conversions import benchmark
    from rainmamba_ros.conversions import (
        SUPPORTED_ENCODINGS,
        as_msg_data,
        extract_alpha,
        image_to_rgb,
        rgb_to_image_fields,
    )
    from rainmamba_ros.node import DerainNode
    from rainmamba_ros.node_messages import image_message

    rclpy.init(args=[])
    node = DerainNode()
    sink = rclpy.create_node('bench_sink')
    received = [0]
    sink.create_subscription(Image, 'derained/image',
                             lambda m: received.__setitem__(0, received[0] + 1), 10)
    executor = SingleThreadedExecutor()
    executor.add_node(sink)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    node.stop_worker()   # the worker must not race the bench for the frames
    cam = node.cameras[0]
    info = CameraInfo(width=width, height=height)
    cam.infos.append(info)
    deadline = time.monotonic() + 10.0
    while cam.pub_image.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)

    rng = np.random.default_rng(0)
    rgb0 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rows: dict[str, dict[str, float]] = {}
    try:
        for enc in ENCODINGS:
            flat, step = rgb_to_image_fields(rgb0, enc)
            msg = Image(height=height, width=width, encoding=enc, step=step)
            msg.data = as_msg_data(flat)
            msg.header.frame_id = 'bench'
            info.header = msg.header
            t: dict[str, list[float]] = {'callback': [], 'in': [], 'out': [], 'publish': []}
            for i in range(repeats + 10):
                msg.header.stamp = node.get_clock().now().to_msg()
                t0 = time.perf_counter()
                node.on_image(cam, msg)                   # the subscription callback
                pending = node.take_received()
                t1 = time.perf_counter()
                rgb, alpha = image_to_rgb(msg), extract_alpha(msg)
                t2 = time.perf_counter()
                out = image_message(msg, rgb, enc, alpha)   # inference skipped: RGB as is
                t3 = time.perf_counter()
                node.publish(cam, msg, pending[cam.stream_id].t_in, 0.0, out)
                t4 = time.perf_counter()
                if i >= 10:  # warm-up excluded
                    for key, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                        t[key].append(dt * 1e3)
            row = {k: statistics.median(v) for k, v in t.items()}
            row['total'] = sum(row.values())
            rows[enc] = row
    finally:
        executor.shutdown()
        sink.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown()

    print(f'derain node overhead per {width}x{height} frame, inference excluded '
          f'(median of {repeats}, ms)')
    print(f'{"encoding":<12} {"callback":>9} {"conv in":>8} {"conv out":>9} {"publish":>8} '
          f'{"total":>7}')
    for enc, r in rows.items():
        print(f'{enc:<12} {r["callback"]:9.3f} {r["in"]:8.3f} {r["out"]:9.3f} '
              f'{r["publish"]:8.3f} {r["total"]:7.3f}')
    conv = benchmark(width, height, repeats=max(20, repeats // 4), encodings=SUPPORTED_ENCODINGS)
    print('\nconversions alone, every encoding (median ms; out includes the array.array copy)')
    print(f'{"encoding":<12} {"in":>7} {"out":>7} {"total":>7}')
    for enc, r in conv.items():
        print(f'{enc:<12} {r["in_ms"]:7.3f} {r["out_ms"]:7.3f} {r["total_ms"]:7.3f}')
    worst = max(r['total'] for r in rows.values())
    print(f'worst total {worst:.3f} ms (target < {TARGET_MS} ms): '
          f'{"met" if worst < TARGET_MS else "NOT met"}; subscriber received {received[0]}')
    return {'width': width, 'height': height, 'repeats': repeats,
            'unit': 'ms (median)', 'target_ms': TARGET_MS, 'worst_total_ms': worst,
            'per_encoding': rows, 'conversions': conv,
            'machine': platform.processor() or platform.machine(),
            'python': sys.version.split()[0]}


def run(args: argparse.Namespace) -> int:
    result = bench_node_overhead(args.width, args.height, args.repeats)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f'wrote {args.json}')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
