"""Derainer: the one facade between RainMamba and its users (ROS node, bag replay, demo).

Loads a model once, keeps one stream state per stream id, steps streams of equal frame size
together, and resets a stream's state when its timeline breaks. Frames in and out are
(H, W, 3) uint8 RGB numpy arrays; callers never see tensors.

Reset rules (each counted in `counters['resets']`):
* request       -- `reset()` was called (the node's ~/reset service);
* time_backwards-- a stamp older than the previous one (a bag loop, a restarted driver);
* gap           -- consecutive stamps further apart than `gap_reset_s` (dropped stream, pause);
* size_change   -- the frame size changed;
* non_finite    -- the carried state stopped being finite (logged as a warning); that frame is
                   passed through unchanged.
"""
from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rainmamba_core.backends.base import Backend
from rainmamba_core.errors import RainMambaError

log = logging.getLogger(__name__)

RESET_REASONS = ('request', 'time_backwards', 'gap', 'size_change', 'non_finite')
MODES = ('streaming', 'windowed')


class DerainerError(RainMambaError, ValueError):
    """Bad configuration or bad input given to the Derainer."""


@dataclass
class _Stream:
    size: tuple[int, int] | None = None          # (H, W) of the frames as received
    last_stamp: int | None = None
    state: Any = None                            # backend state handle (streaming)
    window: collections.deque = field(default_factory=collections.deque)  # recent frames (windowed)
    frames: int = 0


def load_backend(model_path: str | Path | None, backend: str, device: str, precision: str):
    """Build the inference backend for a model file (None/'' -> the bundled default)."""
    path = Path(model_path) if model_path else None
    if backend not in ('torch', 'onnxruntime'):
        raise DerainerError(f"backend '{backend}' is not one of torch, onnxruntime")
    if backend == 'onnxruntime' or (path is not None and path.suffix == '.onnx'):
        try:
            from rainmamba_core.backends.onnx_backend import make_onnx_backend
        except ImportError as exc:
            raise DerainerError(f'the onnxruntime backend is unavailable: {exc}') from exc
        return make_onnx_backend(path, device=device, precision=precision)
    from rainmamba_core.backends.torch_backend import TorchBackend
    from rainmamba_core.models.rainmamba import RainMamba, load_default_model
    model = load_default_model() if path is None else RainMamba.from_checkpoint(path)
    return TorchBackend(model, device=device, precision=precision)


class Derainer:
    """Derain camera streams frame by frame.

    Args:
        model_path: a RainMamba checkpoint (.pt/.pth), an exported model (.onnx), or None/''
            for the bundled default (tiny causal model).
        mode: 'streaming' (causal model, one step per frame, constant cost) or 'windowed'
            (the last `window` frames re-run for every new frame; works with official weights).
        device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'.
        backend: 'torch' | 'onnxruntime', or a ready backend object (the `Backend` interface of
            rainmamba_core.backends.base: a TorchBackend over a model in memory, or a stand-in
            whose output is a known function of its input, as the tests use); model_path,
            device and precision are then not used.
        precision: 'fp32' | 'fp16' | 'bf16' (half precisions on CUDA only).
        window: frames per clip in windowed mode (default: the model's own).
        max_size: when > 0, frames whose long side exceeds it are derained downscaled and the
            result is resized back to the input size.
        gap_reset_s: reset a stream when consecutive stamps are further apart than this.
    """

    def __init__(self, model_path: str | Path | None = None, mode: str = 'streaming', device: str = 'auto',
                 backend: str | Backend = 'torch', precision: str = 'fp32', window: int | None = None,
                 max_size: int = 0, gap_reset_s: float = 1.0):
        if mode not in MODES:
            raise DerainerError(f"mode '{mode}' is not one of {', '.join(MODES)}")
        if max_size < 0 or gap_reset_s <= 0:
            raise DerainerError(f'max_size must be >= 0 and gap_reset_s > 0 (got {max_size}, {gap_reset_s})')
        self._backend = (load_backend(model_path, backend, device, precision) if isinstance(backend, str)
                         else backend)
        if mode == 'streaming' and not self._backend.streaming:
            raise DerainerError(f'{model_path or "the model"} is an official (non-causal) model: it cannot stream '
                                "frame by frame; use mode='windowed'")
        self.mode = mode
        self.window = int(window or self._backend.window)
        if self.window < 1:
            raise DerainerError(f'window must be >= 1, got {self.window}')
        self.max_size = int(max_size)
        self.gap_ns = int(gap_reset_s * 1e9)
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.RLock()
        self._frames = 0
        self._resets = dict.fromkeys(RESET_REASONS, 0)

    # ------------------------------------------------------------------ properties
    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {'frames': self._frames, 'resets': dict(self._resets), 'streams': len(self._streams)}

    # ------------------------------------------------------------------ public API
    def reset(self, stream_id: str | None = None) -> None:
        """Forget the state of one stream (or of all streams when None)."""
        with self._lock:
            ids = list(self._streams) if stream_id is None else [stream_id]
            for sid in ids:
                if sid in self._streams:
                    self._reset(sid, 'request')

    def process(self, stream_id: str, frame: np.ndarray, stamp_ns: int | None = None) -> np.ndarray:
        """Derain one frame of one stream: (H, W, 3) uint8 RGB in and out."""
        return self.process_batch([(stream_id, frame, stamp_ns)])[0]

    def process_batch(self, items: list[tuple[str, np.ndarray, int | None]]) -> list[np.ndarray]:
        """Derain one frame for each of several streams; equal sizes run as one batch."""
        ids = [sid for sid, _, _ in items]
        if len(set(ids)) != len(ids):
            raise DerainerError(f'process_batch got stream ids {ids}: each stream may appear once per batch')
        with self._lock:
            small = [self._prepare(sid, frame, stamp) for sid, frame, stamp in items]
            outs: list[np.ndarray | None] = [None] * len(items)
            groups: dict[tuple, list[int]] = collections.defaultdict(list)
            for i, (sid, _, _) in enumerate(items):
                stream = self._streams[sid]
                key = small[i].shape if self.mode == 'streaming' else (small[i].shape, len(stream.window))
                groups[key].append(i)
            for idx in groups.values():
                results = self._run_group([items[i][0] for i in idx], np.stack([small[i] for i in idx]))
                for i, out in zip(idx, results):
                    outs[i] = out
            self._frames += len(items)
            return [self._finish(out, frame) for out, (_, frame, _) in zip(outs, items)]

    # ------------------------------------------------------------------ internals
    def _reset(self, sid: str, reason: str) -> None:
        self._resets[reason] += 1
        stream = self._streams[sid]
        stream.state, stream.last_stamp = None, None
        stream.window.clear()
        log.info('stream %r reset (%s)', sid, reason)

    def _prepare(self, sid: str, frame: np.ndarray, stamp: int | None) -> np.ndarray:
        """Validate, apply the reset rules, downscale; returns the frame the model sees."""
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            desc = (f'{type(frame).__name__} {getattr(frame, "dtype", "")} {getattr(frame, "shape", "")}'
                    if isinstance(frame, np.ndarray) else type(frame).__name__)
            raise DerainerError(f'stream {sid!r}: expected an (H, W, 3) uint8 RGB array, got {desc}')
        if frame.shape[0] < 8 or frame.shape[1] < 8:
            raise DerainerError(f'stream {sid!r}: frame {frame.shape[1]}x{frame.shape[0]} is too small (min 8x8)')
        stream = self._streams.setdefault(sid, _Stream())
        size = frame.shape[:2]
        if stream.size is not None and stream.size != size:
            self._reset(sid, 'size_change')
        stream.size = size
        if stamp is not None and stream.last_stamp is not None:
            if stamp < stream.last_stamp:
                self._reset(sid, 'time_backwards')
            elif stamp - stream.last_stamp > self.gap_ns:
                self._reset(sid, 'gap')
        if stamp is not None:
            stream.last_stamp = stamp
        stream.frames += 1
        if self.max_size and max(size) > self.max_size:
            scale = self.max_size / max(size)
            dsize = (max(8, round(size[1] * scale)), max(8, round(size[0] * scale)))
            return cv2.resize(frame, dsize, interpolation=cv2.INTER_AREA)
        return frame

    def _run_group(self, sids: list[str], frames: np.ndarray) -> list[np.ndarray]:
        """frames: (B, h, w, 3) uint8 for streams `sids` of equal size."""
        streams = [self._streams[s] for s in sids]
        if self.mode == 'windowed':
            for stream, f in zip(streams, frames):
                if not stream.window:  # stream start: fill the window with the first frame
                    stream.window.extend([f] * (self.window - 1))
                stream.window.append(f)
                while len(stream.window) > self.window:
                    stream.window.popleft()
            clips = np.stack([np.stack(list(s.window)) for s in streams])  # (B, T, h, w, 3)
            return list(self._backend.run_clip(clips))
        h, w = frames.shape[1:3]
        states = [s.state if s.state is not None else self._backend.new_state(h, w) for s in streams]
        out, new_states, finite = self._backend.step(frames, states)
        results = []
        for sid, stream, o, st, ok, f in zip(sids, streams, out, new_states, finite, frames):
            if ok:
                stream.state = st
                results.append(o)
            else:
                log.warning('stream %r: state became non-finite; resetting it and passing this frame through', sid)
                self._reset(sid, 'non_finite')
                results.append(f)
        return results

    @staticmethod
    def _finish(out: np.ndarray, frame: np.ndarray) -> np.ndarray:
        if out.shape != frame.shape:
            out = cv2.resize(out, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        return out
