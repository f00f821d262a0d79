"""`replay_bag`, the public API of bag replay, and what it returns."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from rainmamba_ros.replay.errors import ReplayError
from rainmamba_ros.replay.pipeline import Pipeline
from rainmamba_ros.replay.video import VideoSink, video_paths


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


def make_derainer(derainer_kwargs: dict[str, Any]) -> Any:
    from rainmamba_core.streaming.derainer import Derainer
    try:
        return Derainer(**derainer_kwargs)
    except Exception as exc:  # checkpoint, backend and option errors all mean "bad --model/..."
        opts = ', '.join(f'{k}={v!r}' for k, v in derainer_kwargs.items())
        raise ReplayError(f'cannot load the model ({opts}): {type(exc).__name__}: {exc}') from exc


def _check_arguments(input_path: Path, output_path: Path, storage: str, overwrite: bool,
                     jpeg_quality: int, queue_size: int) -> None:
    """Refuse options and paths before the bag is opened (ReplayError)."""
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


def _output_connections(bag: InputBag, chosen: dict[str, str], out_names: dict[str, str], replace: bool
                        ) -> tuple[list[tuple[str, dict[str, Any]]], dict[tuple[int, int], int],
                                   dict[tuple[int, int], int]]:
    """-> (specs, conn_map, derived): output connections as (topic, spec), the index of each
    input connection's copy, and the index its derained frames go to."""
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
    return specs, conn_map, derived


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
        export_video: write side-by-side rainy | derained MP4s (see `video.video_paths`).
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
    _check_arguments(input_path, output_path, storage, overwrite, jpeg_quality, queue_size)
    t_start = time.perf_counter()
    with InputBag(input_path) as bag:
        chosen, out_names = _resolve_topics(bag, topics, replace)
        video_files: dict[str, Path] = {}
        if export_video:
            video_files = video_paths(Path(export_video), list(chosen))
            existing = [str(p) for p in video_files.values() if p.exists()]
            if existing and not overwrite:
                raise ReplayError(f'video output {", ".join(existing)} already exists: choose '
                                  f'another --export-video path or pass --overwrite')
        if derainer is None:
            derainer = make_derainer(dict(derainer_kwargs or {}))
        resets_before = dict(derainer.counters.get('resets', {}))

        out = OutputBag(output_path, storage=storage, overwrite=overwrite)
        videos: dict[str, VideoSink] = {}
        bar = None
        try:
            specs, conn_map, derived = _output_connections(bag, chosen, out_names, replace)
            out.set_custom_data('rainmamba.replay', json.dumps({
                'input': str(input_path), 'topics': out_names, 'replace': replace,
                'derainer': {k: str(v) for k, v in (derainer_kwargs or {}).items()}}))

            duration_s = bag.duration_ns / 1e9
            counts = {t.topic: t.count for t in bag.topics()}
            for topic, path in video_files.items():
                fps = (counts[topic] - 1) / duration_s if duration_s > 0 else 30.0
                videos[topic] = VideoSink(path, float(min(120.0, max(1.0, fps))))

            from tqdm import tqdm
            bar = tqdm(total=sum(counts[t] for t in chosen), unit='frame', desc='derain',
                       disable=not progress, dynamic_ncols=True, file=sys.stderr)
            pipe = Pipeline(bag, out, derainer, chosen, specs, conn_map, derived, replace, videos,
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
