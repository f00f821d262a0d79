"""`rainmamba replay`: derain image topics of a recorded bag into a new ROS 2 bag, offline.

    rainmamba replay INPUT OUTPUT --topic /front/image_raw [--topic ...] [--format mcap|sqlite3]
                     [--replace] [--overwrite] [--export-video PATH] [model options]

No ROS install needed (rosbags + the Derainer). INPUT is a ROS 2 bag (sqlite3 or MCAP, split
and/or compressed, or a bare .db3/.mcap) or a ROS 1 .bag. OUTPUT is a new ROS 2 bag holding:
- every input message unchanged, byte for byte, with its topic's QoS profiles and its receive
  time (ROS 1 input is converted to CDR, see `bagio`);
- for each chosen topic, the derained frames on `<namespace>/derained/image` as
  sensor_msgs/Image (what the live node publishes): same header (stamp, frame_id), same encoding
  (for CompressedImage input: the raw encoding its `format` names, else bgr8), same receive
  time and QoS as the input message. With `--replace` they take the place of the input frames
  instead, in the input's type (CompressedImage is re-compressed in its own format).

Pipeline (so decoding, inference and writing overlap and memory stays flat):
    reader thread:  bag -> CDR -> message -> RGB            --queue(bounded)-->
    main thread:    Derainer.process_batch (one frame per chosen topic per batch; topics of
                    equal size step together)               --queue(bounded)-->
    writer thread:  RGB -> message -> CDR -> output bag (+ side-by-side video)
Messages leave the writer in input order. Ctrl-C (or SIGTERM from the CLI) stops all three,
removes the temporary output and leaves OUTPUT as it was; exit code 130.

Exit codes: 0 done, 2 bad input (unreadable/corrupt bag, missing or non-image topic, existing
output without --overwrite, bad option), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rainmamba_core.errors import RainMambaError
from rainmamba_ros.bagio import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    IMAGE_TYPES,
    STORAGE_FORMATS,
    InputBag,
    OutputBag,
    derained_topic,
    normalise_topic,
)
from rainmamba_ros.conversions import (
    ImageConversionError,
    compressed_source_encoding,
    compressed_to_rgb,
    extract_alpha,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image_fields,
)

__all__ = ['ReplayError', 'ReplaySummary', 'replay_bag', 'bench_replay', 'make_synthetic_bag',
           'add_arguments', 'run', 'main']

_LOG = logging.getLogger(__name__)

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


class ReplayError(RainMambaError, Exception):
    """Replay cannot proceed; the message names the input, what was expected and what to do."""


# --------------------------------------------------------------------------- pipeline items
@dataclass
class _Frame:
    """One image message of a chosen topic on its way through the pipeline."""

    topic: str
    msgtype: str                   # input type
    out_msgtype: str               # output type (Image, or CompressedImage with --replace)
    t_ns: int                      # receive time in the bag
    stamp_ns: int                  # header stamp, what the Derainer's reset rules see
    msg: Any                       # decoded message (rosbags dataclass, ROS 2 types)
    rgb: np.ndarray                # (H, W, 3) uint8 RGB input
    alpha: np.ndarray | None       # (H, W) uint8 alpha of rgba8/bgra8 input
    copy_conn: int | None          # output connection of the original bytes (None: --replace)
    copy_data: bytes | memoryview | None
    out_conn: int                  # output connection index for the derained message
    out: np.ndarray | None = None  # (H, W, 3) uint8 RGB derained


@dataclass
class _Raw:
    """A message copied unchanged."""

    conn: int                      # output connection index
    t_ns: int
    data: bytes | memoryview


@dataclass
class _Failure:
    exc: BaseException


_END = object()


@dataclass
class ReplaySummary:
    """What a replay did; `table()` is the end-of-run report."""

    input: str
    output: str
    storage: str
    frames: dict[str, int]                 # input topic -> frames derained
    output_topics: dict[str, str]          # input topic -> derained topic
    copied_messages: int                   # messages copied unchanged (all topics)
    resets: dict[str, int]                 # Derainer reset counts by reason during this run
    wall_s: float
    bag_duration_s: float
    backend: str = ''
    device: str = ''
    videos: list[str] = field(default_factory=list)

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    @property
    def fps(self) -> float:
        return self.total_frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        """Bag duration / wall time: > 1 means faster than real time."""
        return self.bag_duration_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(total_frames=self.total_frames, fps=self.fps,
                 realtime_factor=self.realtime_factor)
        return d

    def table(self) -> str:
        lines = [f'replay: {self.input} -> {self.output} ({self.storage}; '
                 f'{self.backend} on {self.device})']
        width = max([len(t) for t in self.frames] + [5])
        lines.append(f'  {"topic":<{width}}  {"frames":>7}  derained topic')
        for topic, n in self.frames.items():
            lines.append(f'  {topic:<{width}}  {n:>7}  {self.output_topics[topic]}')
        resets = ', '.join(f'{k} {v}' for k, v in self.resets.items() if v) or 'none'
        lines += [
            f'  messages copied unchanged: {self.copied_messages}',
            f'  stream resets: {resets}',
            f'  wall time {self.wall_s:.2f} s for {self.bag_duration_s:.2f} s of bag: '
            f'{self.fps:.2f} frames/s, {self.realtime_factor:.2f}x real time',
        ]
        lines += [f'  video: {v}' for v in self.videos]
        return '\n'.join(lines)


# --------------------------------------------------------------------------- video export
def _topic_slug(topic: str) -> str:
    return topic.strip('/').replace('/', '_') or 'root'


def _video_paths(spec: Path, topics: Sequence[str]) -> dict[str, Path]:
    """One MP4 per topic: PATH.mp4 for one topic, PATH_<topic>.mp4 or PATH/<topic>.mp4 else."""
    if spec.suffix.lower() == '.mp4':
        if len(topics) == 1:
            return {topics[0]: spec}
        return {t: spec.with_name(f'{spec.stem}_{_topic_slug(t)}.mp4') for t in topics}
    return {t: spec / f'{_topic_slug(t)}.mp4' for t in topics}


class _VideoSink:
    """Side-by-side rainy | derained MP4 (mp4v), written beside its final name and renamed."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.tmp = path.with_name(f'.{path.name}.partial.mp4')
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # (W, H) of one half

    def add(self, rainy: np.ndarray, derained: np.ndarray) -> None:
        """rainy, derained: (H, W, 3) uint8 RGB."""
        if self._writer is None:
            h, w = rainy.shape[:2]
            self._size = (w - w % 2, h - h % 2)  # mp4v wants even sizes
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*'mp4v'),
                                           self.fps, (2 * self._size[0], self._size[1]))
            if not self._writer.isOpened():
                raise ReplayError(f'cannot open video {self.tmp} for writing (OpenCV mp4v): '
                                  f'check the directory is writable')
        assert self._size is not None
        halves = []
        for img, label in ((rainy, 'rainy'), (derained, 'derained')):
            if (img.shape[1], img.shape[0]) != self._size:  # size change mid-stream
                img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            scale = max(0.3, self._size[1] / 720)
            cv2.putText(bgr, label, (8, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
            halves.append(bgr)
        self._writer.write(cv2.hconcat(halves))

    def commit(self) -> Path | None:
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self.tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the pipeline
def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class _Pipeline:
    """Reader thread -> inference (caller's thread) -> writer thread, with bounded queues.

    The writer thread owns the output bag from open() to close() (sqlite3 objects may only be
    used by the thread that made them); items name output connections by index into `specs`.
    """

    def __init__(self, bag: InputBag, out: OutputBag, derainer: Any, chosen: dict[str, Any],
                 specs: list[tuple[str, dict[str, Any]]],
                 conn_map: dict[tuple[int, int], int], derived: dict[tuple[int, int], int],
                 replace: bool, videos: dict[str, _VideoSink], jpeg_quality: int,
                 queue_size: int, progress: Any) -> None:
        self.bag, self.out, self.derainer = bag, out, derainer
        self.chosen = chosen
        self.specs = specs
        self.wconns: list[Any] = []
        self.conn_map, self.derived = conn_map, derived
        self.replace = replace
        self.videos = videos
        self.jpeg_quality = jpeg_quality
        self.progress = progress
        self.stop = threading.Event()
        self.q_in: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.q_out: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        # Non-image messages held back while a batch is being assembled (bounded memory).
        self.max_pending = 4 * queue_size
        self.writer_error: BaseException | None = None
        self.frames: Counter[str] = Counter()
        self.copied = 0
        self.last_t_ns = bag.start_ns
        self.t0 = time.perf_counter()
        self._types = bag.out_typestore.types

    # ---------------------------------------------------------------- queue helpers
    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Block until queued; False when the pipeline is stopping (the item is dropped)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            try:
                return q.get(timeout=0.1)  # short waits keep Ctrl-C responsive
            except queue.Empty:
                if self.stop.is_set():
                    return _END

    # ---------------------------------------------------------------- reader thread
    def _decode(self, conn: Any, t_ns: int, cdr: bytes | memoryview) -> _Frame:
        msg = self.bag.deserialize(cdr, conn.msgtype)
        key = (id(conn.owner), conn.id)
        try:
            if conn.msgtype == IMAGE_TYPE:
                rgb, alpha = image_to_rgb(msg), extract_alpha(msg)
            else:
                rgb, alpha = compressed_to_rgb(msg), None
        except ImageConversionError as exc:
            raise ReplayError(f'topic {conn.topic} at bag time {t_ns} ns: {exc}') from exc
        return _Frame(topic=conn.topic, msgtype=conn.msgtype,
                      out_msgtype=conn.msgtype if self.replace else IMAGE_TYPE,
                      t_ns=t_ns, stamp_ns=_stamp_ns(msg),
                      msg=msg, rgb=rgb, alpha=alpha,
                      copy_conn=None if self.replace else self.conn_map[key],
                      copy_data=None if self.replace else cdr,
                      out_conn=self.derived[key])

    def read(self) -> None:
        try:
            for conn, t_ns, cdr in self.bag.messages():
                if self.stop.is_set():
                    return
                if conn.topic in self.chosen:
                    item: Any = self._decode(conn, t_ns, cdr)
                else:
                    item = _Raw(self.conn_map[(id(conn.owner), conn.id)], t_ns, cdr)
                if not self._put(self.q_in, item):
                    return
            self._put(self.q_in, _END)
        except BaseException as exc:  # handed to the main thread, which raises it
            self._put(self.q_in, _Failure(exc))

    # ---------------------------------------------------------------- writer thread
    def _encode(self, f: _Frame) -> memoryview:
        assert f.out is not None
        msg = f.msg
        if f.out_msgtype == IMAGE_TYPE:
            if f.msgtype == IMAGE_TYPE:
                encoding = msg.encoding
            else:  # like the node: the encoding the format names ("rgb8; jpeg ..."), else bgr8
                encoding = compressed_source_encoding(msg.format) or 'bgr8'
            data, step = rgb_to_image_fields(f.out, encoding, f.alpha)
            new = self._types[IMAGE_TYPE](
                header=msg.header, height=f.out.shape[0], width=f.out.shape[1],
                encoding=encoding, is_bigendian=0, step=step, data=data)
        else:
            payload = rgb_to_compressed(f.out, msg.format, self.jpeg_quality)
            new = self._types[COMPRESSED_TYPE](header=msg.header, format=msg.format,
                                               data=np.frombuffer(payload, np.uint8))
        return self.bag.out_typestore.serialize_cdr(new, f.out_msgtype)

    def write(self) -> None:
        try:
            self.out.open()
            self.wconns = [self.out.add_connection(topic, **spec) for topic, spec in self.specs]
            conns = self.wconns
            while True:
                item = self._get(self.q_out)
                if self.stop.is_set():  # aborting: the output is discarded
                    return
                if item is _END:
                    self.out.close()
                    return
                if isinstance(item, _Raw):
                    self.out.write(conns[item.conn], item.t_ns, item.data)
                    continue
                if item.copy_conn is not None:
                    assert item.copy_data is not None
                    self.out.write(conns[item.copy_conn], item.t_ns, item.copy_data)
                try:
                    data = self._encode(item)
                except ImageConversionError as exc:
                    raise ReplayError(f'topic {item.topic}: cannot encode the derained frame '
                                      f'back to the input format: {exc}') from exc
                self.out.write(conns[item.out_conn], item.t_ns, data)
                if item.topic in self.videos:
                    assert item.out is not None
                    self.videos[item.topic].add(item.rgb, item.out)
        except BaseException as exc:
            self.writer_error = exc
            self.stop.set()
        finally:
            if self.stop.is_set():
                # Discard the partial bag from this thread: sqlite3 handles belong to it.
                self.out.abort()

    # ---------------------------------------------------------------- main thread
    def _items(self) -> Iterator[Any]:
        while True:
            item = self._get(self.q_in)
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def _forward(self, item: Any) -> None:
        if not self._put(self.q_out, item):
            self._raise_writer_error()

    def _raise_writer_error(self) -> None:
        if self.writer_error is not None:
            raise self.writer_error
        raise ReplayError('the output writer stopped unexpectedly')

    def _flush(self, pending: list[Any]) -> None:
        frames = [p for p in pending if isinstance(p, _Frame)]
        if frames:
            outs = self.derainer.process_batch([(f.topic, f.rgb, f.stamp_ns) for f in frames])
            for f, o in zip(frames, outs):
                f.out = o
                self.frames[f.topic] += 1
            self.last_t_ns = max(f.t_ns for f in frames)
        for p in pending:
            self._forward(p)
        pending.clear()
        if frames:
            self.progress.update(len(frames))
            elapsed = time.perf_counter() - self.t0
            if elapsed > 0:
                bag_s = (self.last_t_ns - self.bag.start_ns) / 1e9
                self.progress.set_postfix_str(f'{bag_s / elapsed:.2f}x real time', refresh=False)

    def run(self) -> None:
        """Run to the end of the bag; raises the first error of any stage."""
        self.t0 = time.perf_counter()
        reader = threading.Thread(target=self.read, name='replay-reader', daemon=True)
        writer = threading.Thread(target=self.write, name='replay-writer', daemon=True)
        reader.start()
        writer.start()
        try:
            pending: list[Any] = []
            in_batch: set[str] = set()
            for item in self._items():
                if self.writer_error is not None:
                    self._raise_writer_error()
                if isinstance(item, _Frame):
                    # One frame per stream per batch keeps every stream in time order.
                    if item.topic in in_batch:
                        self._flush(pending)
                        in_batch.clear()
                    pending.append(item)
                    in_batch.add(item.topic)
                    if len(in_batch) == len(self.chosen):
                        self._flush(pending)
                        in_batch.clear()
                else:
                    self.copied += 1
                    if pending:
                        pending.append(item)
                        if len(pending) > self.max_pending:
                            self._flush(pending)
                            in_batch.clear()
                    else:
                        self._forward(item)
            self._flush(pending)
            if self.stop.is_set():  # stopped by the writer, not by the end of the bag
                self._raise_writer_error()
            self._put(self.q_out, _END)
            writer.join()
            if self.writer_error is not None:
                raise self.writer_error
        finally:
            self.stop.set()
            reader.join(timeout=10)
            writer.join(timeout=10)


# --------------------------------------------------------------------------- public API
def _resolve_topics(bag: InputBag, topics: Sequence[str], replace: bool
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """-> ({input topic: msgtype}, {input topic: output topic}), or ReplayError."""
    if not topics:
        raise ReplayError(f'no --topic given for {bag.path}: choose the image topics to derain; '
                          f'{bag.describe_image_topics()}')
    present = {t.topic: t.msgtype for t in bag.topics()}
    chosen: dict[str, str] = {}
    for raw in topics:
        topic = normalise_topic(raw)
        if topic not in present:
            raise ReplayError(f'topic {topic} is not in bag {bag.path}: expected a '
                              f'sensor_msgs/msg/Image or CompressedImage topic; '
                              f'{bag.describe_image_topics()}')
        if present[topic] not in IMAGE_TYPES:
            raise ReplayError(f'topic {topic} in bag {bag.path} has type {present[topic]}, '
                              f'expected sensor_msgs/msg/Image or CompressedImage; '
                              f'{bag.describe_image_topics()}')
        chosen[topic] = present[topic]
    if replace:
        return chosen, {t: t for t in chosen}
    names = {t: derained_topic(t, m == COMPRESSED_TYPE) for t, m in chosen.items()}
    seen: dict[str, str] = {}
    for topic, name in names.items():
        if name in present:
            raise ReplayError(f'output topic {name} (for {topic}) already exists in bag '
                              f'{bag.path}: pass --replace to overwrite the input frames instead '
                              f'or rename the topic first')
        if name in seen:
            raise ReplayError(f'topics {seen[name]} and {topic} would both be written to {name}: '
                              f'derain them in separate runs or use --replace')
        seen[name] = topic
    return chosen, names


def _make_derainer(derainer_kwargs: dict[str, Any]) -> Any:
    from rainmamba_core.streaming.derainer import Derainer
    try:
        return Derainer(**derainer_kwargs)
    except Exception as exc:  # checkpoint, backend and option errors all mean "bad --model/..."
        opts = ', '.join(f'{k}={v!r}' for k, v in derainer_kwargs.items())
        raise ReplayError(f'cannot load the model ({opts}): {type(exc).__name__}: {exc}') from exc


def replay_bag(input_path: str | Path, output_path: str | Path, topics: Sequence[str], *,
               storage: str = 'mcap', replace: bool = False, overwrite: bool = False,
               derainer: Any = None, derainer_kwargs: dict[str, Any] | None = None,
               export_video: str | Path | None = None, progress: bool = True,
               jpeg_quality: int = 95, queue_size: int = 16) -> ReplaySummary:
    """Derain `topics` of the bag at `input_path` into a new ROS 2 bag at `output_path`.

    Args:
        input_path: ROS 2 bag directory, .db3/.mcap file, or ROS 1 .bag.
        output_path: new bag directory (refused if it exists, unless `overwrite`).
        topics: sensor_msgs/Image or CompressedImage topics to derain.
        storage: 'mcap' or 'sqlite3'.
        replace: write the derained frames under the input topic names instead of
            `<ns>/derained/image`.
        overwrite: replace an existing output (only once the new one is complete).
        derainer: a ready Derainer (or anything with `process_batch` and `counters`); default:
            one built from `derainer_kwargs`.
        derainer_kwargs: keyword arguments of `Derainer(...)` (model_path, device, mode, ...).
        export_video: write side-by-side rainy | derained MP4s (see `_video_paths`).
        progress: show a tqdm progress bar on stderr.
        jpeg_quality: quality for re-compressing CompressedImage (jpeg) topics.
        queue_size: depth of each inter-stage queue (bounds memory).

    Returns:
        ReplaySummary.

    Raises:
        ReplayError, BagIOError: bad input, bad topic or existing output (exit code 2 in the CLI).
        KeyboardInterrupt: after cleaning up; nothing is left at `output_path`.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if storage not in STORAGE_FORMATS:
        raise ReplayError(f'unknown --format {storage!r}: expected one of '
                          f'{", ".join(STORAGE_FORMATS)}')
    if not 0 <= jpeg_quality <= 100:
        raise ReplayError(f'--jpeg-quality {jpeg_quality} is out of range: expected 0..100')
    if queue_size < 1:
        raise ReplayError(f'queue_size {queue_size} must be >= 1')
    if output_path.resolve() == input_path.resolve() or \
            input_path.resolve() in output_path.resolve().parents:
        raise ReplayError(f'output {output_path} is the input or lies inside it: the input is '
                          f'never modified, choose a path outside {input_path}')
    if output_path.exists() and not overwrite:
        raise ReplayError(f'output {output_path} already exists: choose a new path or pass '
                          f'--overwrite to replace it')
    t_start = time.perf_counter()
    with InputBag(input_path) as bag:
        chosen, out_names = _resolve_topics(bag, topics, replace)
        video_paths: dict[str, Path] = {}
        if export_video:
            video_paths = _video_paths(Path(export_video), list(chosen))
            existing = [str(p) for p in video_paths.values() if p.exists()]
            if existing and not overwrite:
                raise ReplayError(f'video output {", ".join(existing)} already exists: choose '
                                  f'another --export-video path or pass --overwrite')
        if derainer is None:
            derainer = _make_derainer(dict(derainer_kwargs or {}))
        resets_before = dict(derainer.counters.get('resets', {}))

        out = OutputBag(output_path, storage=storage, overwrite=overwrite)
        videos: dict[str, _VideoSink] = {}
        bar = None
        try:
            # Output connections: every input connection, plus one derained per chosen one
            # (sensor_msgs/Image with the QoS of its input).
            specs: list[tuple[str, dict[str, Any]]] = []
            conn_map: dict[tuple[int, int], int] = {}
            derived: dict[tuple[int, int], int] = {}
            for conn in bag.connections:
                spec = bag.connection_spec(conn)
                key = (id(conn.owner), conn.id)
                conn_map[key] = len(specs)
                specs.append((conn.topic, spec))
                if conn.topic in chosen and not replace:
                    derived[key] = len(specs)
                    specs.append((out_names[conn.topic], spec if conn.msgtype == IMAGE_TYPE
                                  else bag.type_spec(IMAGE_TYPE, conn)))
                elif conn.topic in chosen:
                    derived[key] = conn_map[key]
            out.set_custom_data('rainmamba.replay', json.dumps({
                'input': str(input_path), 'topics': out_names, 'replace': replace,
                'derainer': {k: str(v) for k, v in (derainer_kwargs or {}).items()}}))

            duration_s = bag.duration_ns / 1e9
            counts = {t.topic: t.count for t in bag.topics()}
            for topic, path in video_paths.items():
                fps = (counts[topic] - 1) / duration_s if duration_s > 0 else 30.0
                videos[topic] = _VideoSink(path, float(min(120.0, max(1.0, fps))))

            from tqdm import tqdm
            bar = tqdm(total=sum(counts[t] for t in chosen), unit='frame', desc='derain',
                       disable=not progress, dynamic_ncols=True, file=sys.stderr)
            pipe = _Pipeline(bag, out, derainer, chosen, specs, conn_map, derived, replace, videos,
                             jpeg_quality, queue_size, bar)
            pipe.run()
            bar.close()
            out.commit()
            written = [str(p) for p in (v.commit() for v in videos.values()) if p is not None]
        except BaseException:
            if bar is not None:
                bar.close()
            out.abort()
            for v in videos.values():
                v.abort()
            raise
        wall = time.perf_counter() - t_start
        resets_now = derainer.counters.get('resets', {})
        return ReplaySummary(
            input=str(input_path), output=str(output_path), storage=storage,
            frames={t: pipe.frames.get(t, 0) for t in chosen}, output_topics=out_names,
            copied_messages=pipe.copied + (0 if replace else sum(pipe.frames.values())),
            resets={k: int(v) - int(resets_before.get(k, 0)) for k, v in resets_now.items()},
            wall_s=wall, bag_duration_s=duration_s,
            backend=str(getattr(derainer, 'backend_name', '')),
            device=str(getattr(derainer, 'device', '')), videos=written)


# --------------------------------------------------------------------------- benchmark
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
        derainer = _make_derainer(kwargs)
        derainer.process('warmup', decoded[0][1], 0)
        t = time.perf_counter()
        outs = [derainer.process('bench', rgb, _stamp_ns(msg)) for msg, rgb, _ in decoded]
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


# --------------------------------------------------------------------------- CLI
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
    model = parser.add_argument_group('model (passed to the Derainer)')
    model.add_argument('--model', default=None,
                       help='checkpoint (.pt) or .onnx; default: the bundled model')
    model.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    model.add_argument('--mode', default='streaming', choices=('streaming', 'windowed'),
                       help='streaming (causal, per frame) or windowed (paper, last T frames)')
    model.add_argument('--max-size', type=int, default=0,
                       help='derain frames whose long side exceeds this downscaled (0: off)')
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
    return {'model_path': args.model or None, 'device': args.device, 'mode': args.mode,
            'max_size': args.max_size, 'gap_reset_s': args.gap_reset_s}


def _error(msg: str) -> int:
    print(f'rainmamba replay: error: {msg}', file=sys.stderr)
    return EXIT_BAD_INPUT


def run(args: argparse.Namespace) -> int:
    """Run the replay (or the benchmark) from parsed arguments; returns the exit code."""
    if args.bench:
        try:
            w, h = (int(v) for v in str(args.bench_size).lower().split('x'))
        except ValueError:
            return _error(f'--bench-size {args.bench_size!r}: expected WxH, e.g. 640x480')
        bench_replay(width=w, height=h, frames=args.bench_frames, storage=args.storage,
                     derainer_kwargs=_derainer_kwargs(args), json_path=args.bench_json,
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
                             derainer_kwargs=_derainer_kwargs(args),
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


if __name__ == '__main__':
    sys.exit(main())
