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
The stamp rules compare the stamps given to `process`, so they hold when every frame the camera
sent is processed (bag replay, offline). A caller that skips frames (the ROS node keeps only the
newest) judges breaks on the stamps it *received* with `timeline.StampTimeline`, passes no
stamp, and calls `reset(stream_id, reason)` itself. Resets are logged at most once per
`log_every_s` and reason, with the number not logged since.

Bounds: an entry per stream id is kept for at most `max_streams` streams (least recently used
forgotten first) and forgotten after `stream_idle_s` without a frame (`counters['expired']`).
Frames whose pixel count exceeds `max_pixels` (or whose long side exceeds `max_size`) are derained
downscaled and resized back; `max_pixels=-1` picks the device's budget (`CPU_PIXEL_BUDGET` on the
CPU, none on CUDA). Frames below `MIN_SIZE` on either side are refused.

Batches: streams of one frame size are stepped together; on the CPU a step takes at most
`CPU_BATCH_PIXELS` pixels and the rest go in further calls (small frames run faster batched,
640x480 frames slower).

Flip ensemble (`flip_ensemble=True`): every frame is also derained mirrored left to right, as a
second stream with its own carried state (batched with the direct frames as above), and the two
outputs are averaged (`mean_with_mirror`). Rain looks the same in a mirror and the model's errors
partly do not, so the mean is better on every rain set the model card measures, at twice the compute.
It stays causal: each frame's output depends on that frame and the ones before it only.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rainmamba_core.backends.base import Backend
from rainmamba_core.errors import RainMambaError
from rainmamba_core.streaming.timeline import StampTimeline

log = logging.getLogger(__name__)

RESET_REASONS = ('request', 'time_backwards', 'gap', 'size_change', 'non_finite')
MODES = ('streaming', 'windowed')
MIN_SIZE = 8                  # smallest frame side the model takes (its patch embedding)
# Pixels a CPU derains per frame by default when max_pixels=-1 (auto): 640x480 takes about 1 s
# and 0.75 GB with the bundled model on 2 cores; 1920x1080 took 50 s and 4.25 GB at full size.
CPU_PIXEL_BUDGET = 640 * 480
# Pixels one streaming step takes at most on the CPU (frames beyond go in further calls): batches
# of small frames run faster than one call each, of 640x480 frames slower (`Derainer._batch_limit`).
CPU_BATCH_PIXELS = 160_000


class DerainerError(RainMambaError, ValueError):
    """Bad configuration or bad input given to the Derainer."""


@dataclass
class _Stream:
    timeline: StampTimeline                      # stamps given to process()
    size: tuple[int, int] | None = None          # (H, W) of the frames as received
    state: Any = None                            # backend state handle (streaming)
    mirror_state: Any = None                     # the mirrored stream's state (flip_ensemble)
    window: collections.deque = field(default_factory=collections.deque)  # recent frames (windowed)
    frames: int = 0
    last_used: float = 0.0                       # monotonic time of the last frame
    downscale_said: tuple[int, int] | None = None  # input size whose downscale was logged


def mean_with_mirror(direct: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """The flip ensemble's output: the mean of `direct` and `mirrored` flipped back.

    direct: (..., H, W, 3) uint8, the output for the frames as given; mirrored: the output for the
    frames flipped left to right (W axis), still flipped. Halves round to even: rounding them up
    would brighten the output by a quarter of a grey level on average (measured: -0.2 dB on the
    suite's moderate rain).
    """
    total = direct.astype(np.float32) + mirrored[..., ::-1, :]
    return np.round(total * 0.5).astype(np.uint8)


def settings_said(derainer: Any) -> str:
    """The settings of a Derainer worth a log line, as the node's start-up and reload lines end:
    the flip ensemble, the novelty clamp and the head's tiles (what a Derainer does not say is left
    out, so stand-ins without these attributes say nothing)."""
    said = ''
    if getattr(derainer, 'flip_ensemble', False):
        said = ' with the flip ensemble (each frame also derained mirrored: twice the compute)'
    clamp = getattr(derainer, 'novelty_clamp', None)
    if clamp is not None:
        said += f', novelty clamp {clamp:g}' if clamp else ', novelty clamp off'
    tiles = getattr(derainer, 'detail_align_tiles', None)
    if tiles:
        said += f', earlier frames aligned by {tiles}x{tiles} tiles'
    return said


def load_backend(model_path: str | Path | None, backend: str, device: str, precision: str,
                 run_time: dict[str, Any] | None = None):
    """Build the inference backend for a model file (None/'' -> the bundled default).

    run_time: settings of `models.config.RUN_TIME_KEYS` (novelty_clamp, detail_align_tiles) that
    replace the model file's own; a key left out keeps the file's.
    """
    path = Path(model_path) if model_path else None
    if backend not in ('torch', 'onnxruntime'):
        raise DerainerError(f"backend '{backend}' is not one of torch, onnxruntime")
    from rainmamba_core.models.config import ConfigError
    try:
        if backend == 'onnxruntime' or (path is not None and path.suffix == '.onnx'):
            try:
                from rainmamba_core.backends.onnx_backend import make_onnx_backend
            except ImportError as exc:
                raise DerainerError(f'the onnxruntime backend is unavailable: {exc}') from exc
            return make_onnx_backend(path, device=device, precision=precision, run_time=run_time)
        from rainmamba_core.backends.torch_backend import TorchBackend
        from rainmamba_core.models.config import with_run_time
        from rainmamba_core.models.rainmamba import RainMamba, load_default_model
        model = load_default_model() if path is None else RainMamba.from_checkpoint(path)
        if run_time:
            model.config = with_run_time(model.config, run_time)
        return TorchBackend(model, device=device, precision=precision)
    except ConfigError as exc:
        raise DerainerError(f'{path or "the bundled default model"}: {exc}') from exc


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
        max_pixels: when > 0, frames with more pixels than this are derained downscaled (aspect
            kept) and resized back; -1 = the device's budget (CPU_PIXEL_BUDGET on the CPU, no
            limit on CUDA); 0 = no limit.
        gap_reset_s: reset a stream when consecutive stamps are further apart than this.
        max_streams: keep state for at most this many stream ids (least recently used dropped).
        stream_idle_s: forget a stream that got no frame for this long (s).
        log_every_s: log resets at most once per this many seconds and reason.
        flip_ensemble: also derain each frame mirrored left to right, with its own carried state,
            and average the two (module docstring): better output at twice the compute.
        novelty_clamp: the model's novelty clamp in grey levels of mean change (0: off; model card
            (49)); None keeps the model file's own. Needs a model with an aligned detail head; an
            .onnx file has it fixed at export, so only its own value is accepted there.
        detail_align_tiles: how the aligned detail head moves earlier frames onto each frame: 0 one
            shift for the frame, 2-4 one per tile of N x N (model card (50)); None keeps the model
            file's own. Like novelty_clamp: an aligned head needed, fixed in an .onnx file.
        clock: monotonic seconds for the idle and log bounds (tests pass a fake one).
    """

    def __init__(self, model_path: str | Path | None = None, mode: str = 'streaming', device: str = 'auto',
                 backend: str | Backend = 'torch', precision: str = 'fp32', window: int | None = None,
                 max_size: int = 0, gap_reset_s: float = 1.0, max_pixels: int = 0, max_streams: int = 64,
                 stream_idle_s: float = 300.0, log_every_s: float = 10.0, flip_ensemble: bool = False,
                 novelty_clamp: float | None = None, detail_align_tiles: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if mode not in MODES:
            raise DerainerError(f"mode '{mode}' is not one of {', '.join(MODES)}")
        if max_size < 0 or gap_reset_s <= 0:
            raise DerainerError(f'max_size must be >= 0 and gap_reset_s > 0 (got {max_size}, {gap_reset_s})')
        if max_pixels < -1 or max_streams < 1 or stream_idle_s <= 0:
            raise DerainerError(f'max_pixels must be >= -1 (-1 = auto, 0 = no limit), max_streams >= 1 and '
                                f'stream_idle_s > 0 (got {max_pixels}, {max_streams}, {stream_idle_s})')
        given = {'novelty_clamp': novelty_clamp, 'detail_align_tiles': detail_align_tiles}  # RUN_TIME_KEYS
        run_time = {key: value for key, value in given.items() if value is not None}
        if isinstance(backend, str):
            self._backend = load_backend(model_path, backend, device, precision, run_time)
        elif run_time:
            raise DerainerError(f'{" and ".join(run_time)} {"are" if len(run_time) > 1 else "is"} set when the '
                                'Derainer loads the model: a ready backend '
                                'object brings its model as it is (set it on that model\'s config)')
        else:
            self._backend = backend
        if mode == 'streaming' and not self._backend.streaming:
            raise DerainerError(f'{model_path or "the model"} is an official (non-causal) model: it cannot stream '
                                "frame by frame; use mode='windowed'")
        if not isinstance(flip_ensemble, bool):
            raise DerainerError(f'flip_ensemble must be True or False, got {flip_ensemble!r}')
        self.flip_ensemble = flip_ensemble
        self.mode = mode
        self.window = int(window or self._backend.window)
        if self.window < 1:
            raise DerainerError(f'window must be >= 1, got {self.window}')
        self.max_size = int(max_size)
        self.max_pixels_auto = max_pixels == -1
        if self.max_pixels_auto:
            max_pixels = 0 if self._on_cuda else CPU_PIXEL_BUDGET
        self.max_pixels = int(max_pixels)
        self.gap_ns = int(gap_reset_s * 1e9)
        self.max_streams = int(max_streams)
        self.stream_idle_s = float(stream_idle_s)
        self.log_every_s = float(log_every_s)
        self._clock = clock
        self._streams: collections.OrderedDict[str, _Stream] = collections.OrderedDict()  # LRU first
        self._lock = threading.RLock()
        self._frames = 0
        self._expired = 0
        self._resets = dict.fromkeys(RESET_REASONS, 0)
        self._reset_log: dict[str, tuple[float, int]] = {}  # reason -> (last logged, not logged since)

    # ------------------------------------------------------------------ properties
    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def device(self) -> str:
        return self._backend.device

    def _config_value(self, key: str) -> Any:
        """A late key of the model's config (an .onnx file's from its metadata, the key's default
        where it is left out), of its default's type; None when the backend does not say."""
        from rainmamba_core.models.config import LATE_KEYS
        model = getattr(self._backend, 'model', None)
        if model is not None and hasattr(model, 'config'):
            value = getattr(model.config, key)
        else:
            meta = getattr(self._backend, 'meta', None)
            value = meta['config'].get(key, LATE_KEYS[key]) if isinstance(meta, dict) else None
        return None if value is None else type(LATE_KEYS[key])(value)

    @property
    def novelty_clamp(self) -> float | None:
        """The model's novelty clamp in grey levels of mean change (0: off); None when the backend does not say."""
        return self._config_value('novelty_clamp')

    @property
    def detail_align_tiles(self) -> int | None:
        """Tiles a side the aligned head moves earlier frames by (0: one shift); None when the backend does not say."""
        return self._config_value('detail_align_tiles')

    @property
    def _on_cuda(self) -> bool:
        """Whether the backend runs on a CUDA device (sets the pixel budget and the batch limit)."""
        return 'cuda' in str(self._backend.device).lower()

    @property
    def min_size(self) -> int:
        """The smallest frame side (px) `process` accepts."""
        return MIN_SIZE

    @property
    def size_bound(self) -> str:
        """One line saying how frame sizes are bounded (for a start-up log)."""
        parts = []
        if self.max_pixels:
            side = f' (e.g. {round(math.sqrt(self.max_pixels * 4 / 3))}x{round(math.sqrt(self.max_pixels * 3 / 4))})'
            how = f'auto on {self.device}' if self.max_pixels_auto else 'max_pixels'
            parts.append(f'more than {self.max_pixels:,} pixels{side} [{how}]')
        if self.max_size:
            parts.append(f'a long side above {self.max_size} px [max_size]')
        if not parts:
            why = f'auto on {self.device}' if self.max_pixels_auto else 'max_pixels=0, max_size=0'
            return f'frames are derained at full resolution, whatever their size ({why})'
        return f"frames with {' or '.join(parts)} are derained downscaled and resized back"

    @property
    def counters(self) -> dict[str, Any]:
        # Not under self._lock, which process_batch holds for a whole inference: a monitor (the
        # node's /diagnostics) must read these while a slow model runs. Each value is read
        # atomically (CPython copies a dict of ints without releasing the GIL); two values may
        # be one frame apart.
        return {'frames': self._frames, 'resets': dict(self._resets), 'streams': len(self._streams),
                'expired': self._expired}

    # ------------------------------------------------------------------ public API
    def reset(self, stream_id: str | None = None, reason: str = 'request', detail: str = '') -> None:
        """Forget the state of one stream (or of all streams when None).

        reason: one of RESET_REASONS, counted under it (a caller that judges stamp breaks itself
        passes 'gap' or 'time_backwards'); detail: a few words for the log line.
        """
        if reason not in RESET_REASONS:
            raise DerainerError(f"reset reason '{reason}' is not one of {', '.join(RESET_REASONS)}")
        with self._lock:
            ids = list(self._streams) if stream_id is None else [stream_id]
            for sid in ids:
                if sid in self._streams:
                    self._reset(sid, reason, detail)

    def process(self, stream_id: str, frame: np.ndarray, stamp_ns: int | None = None) -> np.ndarray:
        """Derain one frame of one stream: (H, W, 3) uint8 RGB in and out."""
        return self.process_batch([(stream_id, frame, stamp_ns)])[0]

    def process_batch(self, items: list[tuple[str, np.ndarray, int | None]]) -> list[np.ndarray]:
        """Derain one frame for each of several streams; equal sizes run as one batch."""
        ids = [sid for sid, _, _ in items]
        if len(set(ids)) != len(ids):
            raise DerainerError(f'process_batch got stream ids {ids}: each stream may appear once per batch')
        with self._lock:
            self._forget_idle(keep=set(ids))
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
    def _reset(self, sid: str, reason: str, detail: str = '') -> None:
        self._resets[reason] += 1
        stream = self._streams[sid]
        stream.state = stream.mirror_state = None
        stream.timeline.forget()
        stream.window.clear()
        # A storm of resets (a flapping driver) must not flood the log: one line per reason per
        # log_every_s, saying how many were not logged in between. Every reset is counted.
        now = self._clock()
        last, quiet = self._reset_log.get(reason, (-math.inf, 0))
        if now - last < self.log_every_s:
            self._reset_log[reason] = (last, quiet + 1)
            return
        self._reset_log[reason] = (now, 0)
        more = f'; {quiet} more {reason} resets not logged in the last {now - last:.0f} s' if quiet else ''
        log.info('stream %r reset (%s%s)%s', sid, reason, f': {detail}' if detail else '', more)

    def _forget_idle(self, keep: set[str]) -> None:
        """Drop streams idle for stream_idle_s, then the least recently used beyond max_streams."""
        now = self._clock()
        # An idle stream is forgotten even when this call brings it back: its state is stale.
        for sid in [s for s, st in self._streams.items() if now - st.last_used > self.stream_idle_s]:
            del self._streams[sid]
            self._expired += 1
        new = sum(1 for s in keep if s not in self._streams)
        excess = len(self._streams) + new - self.max_streams
        for sid in [s for s in self._streams if s not in keep][:max(0, excess)]:
            del self._streams[sid]
            self._expired += 1

    def _target_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """(h, w) the model should see for an input of `size`, or None for full size."""
        h, w = size
        scale = 1.0
        if self.max_size and max(h, w) > self.max_size:
            scale = self.max_size / max(h, w)
        if self.max_pixels and h * w > self.max_pixels:
            scale = min(scale, math.sqrt(self.max_pixels / (h * w)))
        if scale >= 1.0:
            return None
        # floor, so the budget holds; never below what the model takes
        return max(MIN_SIZE, math.floor(h * scale)), max(MIN_SIZE, math.floor(w * scale))

    def _prepare(self, sid: str, frame: np.ndarray, stamp: int | None) -> np.ndarray:
        """Validate, apply the reset rules, downscale; returns the frame the model sees."""
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            desc = (f'{type(frame).__name__} {getattr(frame, "dtype", "")} {getattr(frame, "shape", "")}'
                    if isinstance(frame, np.ndarray) else type(frame).__name__)
            raise DerainerError(f'stream {sid!r}: expected an (H, W, 3) uint8 RGB array, got {desc}')
        if frame.shape[0] < MIN_SIZE or frame.shape[1] < MIN_SIZE:
            raise DerainerError(f'stream {sid!r}: frame {frame.shape[1]}x{frame.shape[0]} is too small '
                                f'(min {MIN_SIZE}x{MIN_SIZE})')
        if sid not in self._streams:
            self._streams[sid] = _Stream(timeline=StampTimeline(self.gap_ns))
        self._streams.move_to_end(sid)
        stream = self._streams[sid]
        stream.last_used = self._clock()
        size = frame.shape[:2]
        if stream.size is not None and stream.size != size:
            self._reset(sid, 'size_change', f'{stream.size[1]}x{stream.size[0]} -> {size[1]}x{size[0]}')
        stream.size = size
        timeline = stream.timeline
        reason = timeline.observe(stamp)
        if reason is not None:
            detail = timeline.detail
            self._reset(sid, reason, detail)
            timeline.observe(stamp)  # the reset forgot the stamp: this frame starts the new timeline
        stream.frames += 1
        target = self._target_size(size)
        if target is None:
            return frame
        if stream.downscale_said != size:
            stream.downscale_said = size
            log.info('stream %r: %dx%d frames are derained at %dx%d and resized back (%s)', sid, size[1], size[0],
                     target[1], target[0], self.size_bound)
        return cv2.resize(frame, (target[1], target[0]), interpolation=cv2.INTER_AREA)

    def _batch_limit(self, h: int, w: int) -> int:
        """How many (h, w) frames one streaming step may take together.

        On CUDA: all of them. On the CPU, as many as hold CPU_BATCH_PIXELS pixels together: two
        640x480 frames (cameras, or the flip ensemble's two halves) took 1.3x longer in one batch
        than in two calls, two 320x240 or 160x120 frames 0.8-0.95x as long (side by side, on this
        project's 2-core CPU).
        """
        if self._on_cuda:
            return 1 << 30
        return max(1, CPU_BATCH_PIXELS // (h * w))

    def _step(self, frames: np.ndarray, states: list) -> tuple[np.ndarray, list, list[bool]]:
        """The backend's step over `frames`, in batches of at most `_batch_limit` frames."""
        k = self._batch_limit(*frames.shape[1:3])
        if len(frames) <= k:
            return self._backend.step(frames, states)
        parts = [self._backend.step(frames[i:i + k], states[i:i + k]) for i in range(0, len(frames), k)]
        return (np.concatenate([p[0] for p in parts]), [s for p in parts for s in p[1]],
                [ok for p in parts for ok in p[2]])

    def _run_group(self, sids: list[str], frames: np.ndarray) -> list[np.ndarray]:
        """frames: (B, h, w, 3) uint8 for streams `sids` of equal size."""
        streams = [self._streams[s] for s in sids]
        n = len(streams)
        if self.mode == 'windowed':
            for stream, f in zip(streams, frames):
                if not stream.window:  # stream start: fill the window with the first frame
                    stream.window.extend([f] * (self.window - 1))
                stream.window.append(f)
                while len(stream.window) > self.window:
                    stream.window.popleft()
            clips = np.stack([np.stack(list(s.window)) for s in streams])  # (B, T, h, w, 3)
            if not self.flip_ensemble:
                return list(self._backend.run_clip(clips))
            both = self._backend.run_clip(np.concatenate([clips, clips[:, :, :, ::-1]]))  # windowed: one batch
            return list(mean_with_mirror(both[:n], both[n:]))
        h, w = frames.shape[1:3]
        states = [s.state if s.state is not None else self._backend.new_state(h, w) for s in streams]
        if not self.flip_ensemble:
            out, new_states, finite = self._step(frames, states)
        else:  # the mirrored frames are a second stream per camera, with their own states
            states += [s.mirror_state if s.mirror_state is not None else self._backend.new_state(h, w)
                       for s in streams]
            out, new_states, finite = self._step(np.concatenate([frames, frames[:, :, ::-1]]), states)
            finite = [a and b for a, b in zip(finite[:n], finite[n:])]
            out = mean_with_mirror(out[:n], out[n:])
            for stream, st, ok in zip(streams, new_states[n:], finite):
                if ok:
                    stream.mirror_state = st
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
