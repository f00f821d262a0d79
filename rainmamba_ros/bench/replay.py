"""Replay throughput on a generated bag: each stage alone, then the whole pipeline.

    rainmamba replay --bench [--bench-frames 30] [--bench-size 640x480]

`make_synthetic_bag` also serves the tests.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rainmamba_ros.bagio import IMAGE_TYPE, STORAGE_FORMATS, InputBag
from rainmamba_ros.conversions import image_to_rgb, rgb_to_image_fields
from rainmamba_ros.replay.api import make_derainer, replay_bag
from rainmamba_ros.replay.pipeline import stamp_ns


def _synthetic_frame(i: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a drifting colour gradient with bright rain streaks."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    phase = i / 30.0
    img = np.stack([0.5 + 0.4 * np.sin(6 * x + phase) * np.ones_like(y),
                    0.4 + 0.3 * y * np.ones_like(x),
                    0.5 + 0.3 * np.cos(4 * y + 2 * x - phase)], axis=-1)
    img = (np.clip(img, 0, 1) * 200).astype(np.uint8)
    for _ in range(max(1, width * height // 2000)):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        length = int(rng.integers(max(2, height // 40), max(3, height // 10)))
        cv2.line(img, (x0, y0), (x0 + length // 4, y0 + length), (230, 230, 230), 1)
    return img


def make_synthetic_bag(path: str | Path, *, width: int = 640, height: int = 480,
                       fps: float = 30.0, frames: int = 30, topic: str = '/front/image_raw',
                       storage: str = 'mcap', encoding: str = 'rgb8') -> Path:
    """Write a ROS 2 bag with one rainy sensor_msgs/Image topic (for the benchmark and demo)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types[IMAGE_TYPE]
    Header = store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    rng = np.random.default_rng(0)
    path = Path(path)
    t0 = 1_700_000_000 * 1_000_000_000
    with Writer(path, version=9, storage_plugin=STORAGE_FORMATS[storage]) as writer:
        conn = writer.add_connection(topic, IMAGE_TYPE, typestore=store)
        for i in range(frames):
            t = t0 + int(round(i * 1e9 / fps))
            data, step = rgb_to_image_fields(_synthetic_frame(i, width, height, rng), encoding)
            msg = Image(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9),
                                      frame_id='front_camera'),
                        height=height, width=width, encoding=encoding, is_bigendian=0,
                        step=step, data=data)
            writer.write(conn, t, store.serialize_cdr(msg, IMAGE_TYPE))
    return path


class _IdentityModel:
    """Returns each frame unchanged: measures the replay machinery alone (the I/O ceiling)."""

    backend_name, device = 'identity', 'cpu'
    counters: dict[str, Any] = {'resets': {}}

    def process_batch(self, items: list[tuple[str, np.ndarray, int | None]]) -> list[np.ndarray]:
        return [np.array(frame) for _, frame, _ in items]


def bench_replay(*, width: int = 640, height: int = 480, fps: float = 30.0, frames: int = 30,
                 storage: str = 'mcap', derainer_kwargs: dict[str, Any] | None = None,
                 json_path: str | Path | None = 'out/bench/replay.json',
                 progress: bool = True) -> dict[str, Any]:
    """Replay throughput on a generated `fps` bag: each stage alone, then the whole pipeline.

    Prints a table and writes JSON. Stage rates: read+decode (bag -> RGB, incl. opening the
    bag), inference (Derainer.process, one stream, model loaded), encode+write (RGB -> CDR ->
    bag); `replay` is the overlapped pipeline end to end, including model loading; `replay,
    identity model` is the same pipeline with a model that returns its input, i.e. the ceiling
    the replay machinery itself sets. x real time = bag seconds / wall seconds.
    """
    from rosbags.rosbag2 import Writer

    kwargs = dict(derainer_kwargs or {})
    kwargs.setdefault('model_path', None)
    result: dict[str, Any] = {'width': width, 'height': height, 'bag_fps': fps,
                              'frames': frames, 'storage': storage, 'derainer': {
                                  k: str(v) for k, v in kwargs.items()}}
    with tempfile.TemporaryDirectory(prefix='rainmamba-bench-replay-') as tmp:
        src = make_synthetic_bag(Path(tmp) / 'rainy', width=width, height=height, fps=fps,
                                 frames=frames, storage=storage)
        stages: dict[str, float] = {}

        # read + decode only
        t = time.perf_counter()
        decoded: list[tuple[Any, np.ndarray, Any]] = []
        with InputBag(src) as bag:
            for conn, t_ns, cdr in bag.messages():
                msg = bag.deserialize(cdr, conn.msgtype)
                decoded.append((msg, image_to_rgb(msg), t_ns))
            store = bag.out_typestore
            spec = bag.connection_spec(bag.connections[0])
        stages['read_decode'] = time.perf_counter() - t

        # inference only (model already loaded)
        derainer = make_derainer(kwargs)
        derainer.process('warmup', decoded[0][1], 0)
        t = time.perf_counter()
        outs = [derainer.process('bench', rgb, stamp_ns(msg)) for msg, rgb, _ in decoded]
        stages['inference'] = time.perf_counter() - t

        # encode + write only
        t = time.perf_counter()
        with Writer(Path(tmp) / 'write_only', version=9,
                    storage_plugin=STORAGE_FORMATS[storage]) as writer:
            conn = writer.add_connection('/front/derained/image', **spec)
            Image = store.types[IMAGE_TYPE]
            for (msg, _, t_ns), out in zip(decoded, outs):
                data, step = rgb_to_image_fields(out, msg.encoding)
                new = Image(header=msg.header, height=height, width=width,
                            encoding=msg.encoding, is_bigendian=0, step=step, data=data)
                writer.write(conn, t_ns, store.serialize_cdr(new, IMAGE_TYPE))
        stages['encode_write'] = time.perf_counter() - t
        del decoded, outs

        # the whole pipeline, fresh Derainer (model load included)
        summary = replay_bag(src, Path(tmp) / 'derained', ['/front/image_raw'], storage=storage,
                             derainer_kwargs=kwargs, progress=progress)
        ceiling = replay_bag(src, Path(tmp) / 'identity', ['/front/image_raw'],
                             storage=storage, derainer=_IdentityModel(), progress=False)

    bag_s = (frames - 1) / fps if frames > 1 else 1.0 / fps
    rows = []
    for name, secs in stages.items():
        rows.append({'stage': name, 'seconds': secs, 'fps': frames / secs if secs else 0.0,
                     'x_realtime': bag_s / secs if secs else 0.0})
    rows.append({'stage': 'replay (pipelined)', 'seconds': summary.wall_s, 'fps': summary.fps,
                 'x_realtime': summary.realtime_factor})
    rows.append({'stage': 'replay, identity model', 'seconds': ceiling.wall_s,
                 'fps': ceiling.fps, 'x_realtime': ceiling.realtime_factor})
    serial = sum(stages.values())
    result.update(backend=summary.backend, device=summary.device, bag_seconds=bag_s, rows=rows,
                  serial_seconds=serial, overlap_speedup=serial / summary.wall_s
                  if summary.wall_s else 0.0, torch_threads=_torch_threads())
    print(f'replay benchmark: {frames} frames {width}x{height} @ {fps:g} fps '
          f'({bag_s:.2f} s of bag), {storage}, {summary.backend} on {summary.device}')
    print(f'  {"stage":<24} {"seconds":>9} {"frames/s":>9} {"x real":>8}')
    for r in rows:
        print(f'  {r["stage"]:<24} {r["seconds"]:>9.2f} {r["fps"]:>9.2f} '
              f'{r["x_realtime"]:>8.3f}')
    print(f'  stages run one after another would take {serial:.2f} s; pipelined '
          f'{summary.wall_s:.2f} s (incl. model load)')
    print(f'  torch threads: {result["torch_threads"]}')
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(f'  wrote {path}')
    return result


def _torch_threads() -> int:
    try:
        import torch
        return int(torch.get_num_threads())
    except ImportError:
        return 0
