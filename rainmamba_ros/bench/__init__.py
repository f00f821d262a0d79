"""`rainmamba bench` with the ROS side's sections: the core's (streaming vs windowed, memory,
scan backends) followed by bag replay throughput and the derain node's own overhead.

The ROS side's one home for benchmarks: `bench.replay` (replay throughput on a generated bag),
`bench.node` (the node's per-frame overhead, inference excluded), `bench.conversions` (message
<-> RGB alone).
"""
from __future__ import annotations

import argparse
from typing import Any

from rainmamba_core import bench as core_bench
from rainmamba_core.bench import Section


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--replay-frames', type=int, default=30, help='frames of the 640x480 replay benchmark bag')


def _replay_section(args: argparse.Namespace) -> Any:
    from rainmamba_ros.bench.replay import bench_replay
    return bench_replay(frames=args.replay_frames, progress=False, json_path=None,
                        derainer_kwargs={'model_path': args.model, 'device': 'cpu'})


def _node_section(args: argparse.Namespace) -> Any:
    try:
        from rainmamba_ros.bench.node import bench_node_overhead
    except ImportError as exc:
        raise ImportError(f'needs rclpy: {exc}') from exc
    return bench_node_overhead(width=640, height=480, repeats=100)


SECTIONS: tuple[Section, ...] = core_bench.SECTIONS + (
    Section('replay', 'replay', _replay_section, _replay_arguments),
    Section('node', 'node', _node_section),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    core_bench.add_arguments(parser, SECTIONS)


def run(args: argparse.Namespace) -> int:
    return core_bench.run(args, SECTIONS)
