"""`rainmamba replay` and the `replay` console script: options, exit codes, signals."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rainmamba_core.errors import RainMambaError
from rainmamba_core.options import add_derainer_arguments, derainer_kwargs, options_from_args
from rainmamba_ros.bagio import STORAGE_FORMATS
from rainmamba_ros.replay.api import replay_bag

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `rainmamba replay` (and of the `replay` console script)."""
    parser.add_argument('input', nargs='?', type=Path,
                        help='input bag: ROS 2 bag directory, .db3/.mcap file, or ROS 1 .bag')
    parser.add_argument('output', nargs='?', type=Path,
                        help='output ROS 2 bag directory (must not exist unless --overwrite)')
    parser.add_argument('--topic', '-t', action='append', default=[], metavar='TOPIC',
                        help='sensor_msgs/Image or CompressedImage topic to derain (repeatable)')
    parser.add_argument('--format', dest='storage', choices=sorted(STORAGE_FORMATS),
                        default='mcap', help='output storage (default: mcap)')
    parser.add_argument('--replace', action='store_true',
                        help='write derained frames under the input topic names instead of '
                             '<ns>/derained/image')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing output (only once the new one is complete)')
    parser.add_argument('--export-video', type=Path, metavar='PATH',
                        help='side-by-side rainy | derained MP4: PATH.mp4 (one topic), '
                             'PATH_<topic>.mp4 or PATH/<topic>.mp4')
    parser.add_argument('--jpeg-quality', type=int, default=95,
                        help='JPEG quality when re-compressing CompressedImage topics with '
                             '--replace (default: 95)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    model = parser.add_argument_group('model (passed to the Derainer; the options table of rainmamba_core.options)')
    add_derainer_arguments(model)
    model.add_argument('--gap-reset-s', type=float, default=1.0,
                       help='reset a stream when header stamps jump by more than this')
    bench = parser.add_argument_group('benchmark (instead of a replay)')
    bench.add_argument('--bench', action='store_true',
                       help='measure replay throughput on a generated bag; prints a table')
    bench.add_argument('--bench-frames', type=int, default=30, help='frames (default: 30)')
    bench.add_argument('--bench-size', default='640x480', help='WxH (default: 640x480)')
    bench.add_argument('--bench-json', type=Path, default=Path('out/bench/replay.json'),
                       help='where to write the JSON (default: out/bench/replay.json)')


def _derainer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Derainer keywords from the flags; OptionError for a refused combination."""
    return dict(derainer_kwargs(options_from_args(args)), gap_reset_s=args.gap_reset_s)


def _error(msg: str) -> int:
    print(f'rainmamba replay: error: {msg}', file=sys.stderr)
    return EXIT_BAD_INPUT


def run(args: argparse.Namespace) -> int:
    """Run the replay (or the benchmark) from parsed arguments; returns the exit code."""
    try:
        kwargs = _derainer_kwargs(args)
    except RainMambaError as exc:
        return _error(str(exc))
    if args.bench:
        try:
            w, h = (int(v) for v in str(args.bench_size).lower().split('x'))
        except ValueError:
            return _error(f'--bench-size {args.bench_size!r}: expected WxH, e.g. 640x480')
        from rainmamba_ros.bench.replay import bench_replay
        bench_replay(width=w, height=h, frames=args.bench_frames, storage=args.storage,
                     derainer_kwargs=kwargs, json_path=args.bench_json,
                     progress=not args.no_progress)
        return EXIT_OK
    if args.input is None or args.output is None:
        return _error('INPUT and OUTPUT are required: rainmamba replay INPUT OUTPUT '
                      '--topic /camera/image_raw')

    # SIGTERM (e.g. from a job scheduler) cleans up like Ctrl-C.
    def _on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        summary = replay_bag(args.input, args.output, args.topic, storage=args.storage,
                             replace=args.replace, overwrite=args.overwrite,
                             derainer_kwargs=kwargs,
                             export_video=args.export_video, progress=not args.no_progress,
                             jpeg_quality=args.jpeg_quality)
    except RainMambaError as exc:  # ReplayError, BagIOError, DerainerError, a bad checkpoint ...
        return _error(str(exc))
    except OSError as exc:  # e.g. a --model path that does not exist, a full disk
        return _error(f'{type(exc).__name__}: {exc}')
    except KeyboardInterrupt:
        print(f'rainmamba replay: interrupted; no output written ({args.output} left as it '
              f'was)', file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(summary.table())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `replay` (so `ros2 run rainmamba_ros replay ...` works)."""
    parser = argparse.ArgumentParser(
        prog='replay', description='Derain image topics of a ROS bag into a new ROS 2 bag.')
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    return run(args)
