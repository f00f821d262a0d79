"""The replay pipeline: reader thread -> inference (caller's thread) -> writer thread.

    reader thread:  bag -> CDR -> message -> RGB            --queue(bounded)-->
    main thread:    Derainer.process_batch (one frame per chosen topic per batch; topics of
                    equal size step together)               --queue(bounded)-->
    writer thread:  RGB -> message -> CDR -> output bag (+ side-by-side video)

Messages leave the writer in input order; memory stays flat (bounded queues).
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rainmamba_ros.bagio import COMPRESSED_TYPE, IMAGE_TYPE, InputBag, OutputBag
from rainmamba_ros.conversions import (
    ImageConversionError,
    compressed_source_encoding,
    compressed_to_rgb,
    extract_alpha,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image_fields,
)
from rainmamba_ros.replay.errors import ReplayError
from rainmamba_ros.replay.video import VideoSink


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


def stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class Pipeline:
    """Reader thread -> inference (caller's thread) -> writer thread, with bounded queues.

    The writer thread owns the output bag from open() to close() (sqlite3 objects may only be
    used by the thread that made them); items name output connections by index into `specs`.
    """

    def __init__(self, bag: InputBag, out: OutputBag, derainer: Any, chosen: dict[str, Any],
                 specs: list[tuple[str, dict[str, Any]]],
                 conn_map: dict[tuple[int, int], int], derived: dict[tuple[int, int], int],
                 replace: bool, videos: dict[str, VideoSink], jpeg_quality: int,
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
                      t_ns=t_ns, stamp_ns=stamp_ns(msg),
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
