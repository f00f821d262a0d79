"""Side-by-side rainy | derained MP4s written beside a replay."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from rainmamba_ros.replay.errors import ReplayError


def _topic_slug(topic: str) -> str:
    return topic.strip('/').replace('/', '_') or 'root'


def video_paths(spec: Path, topics: Sequence[str]) -> dict[str, Path]:
    """One MP4 per topic: PATH.mp4 for one topic, PATH_<topic>.mp4 or PATH/<topic>.mp4 else."""
    if spec.suffix.lower() == '.mp4':
        if len(topics) == 1:
            return {topics[0]: spec}
        return {t: spec.with_name(f'{spec.stem}_{_topic_slug(t)}.mp4') for t in topics}
    return {t: spec / f'{_topic_slug(t)}.mp4' for t in topics}


class VideoSink:
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
