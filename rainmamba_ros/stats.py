"""Per-camera rate, latency and counter bookkeeping for the node's /diagnostics (no rclpy).

`CameraStats.snapshot()` returns plain values and `assess()` turns them into a level and a
message, so the node only wraps them into diagnostic_msgs.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field


class RateMeter:
    """Event rate over a sliding time window (monotonic clock).

    Streams slower than the window (fewer than 2 events in it; a CPU deraining large frames
    publishes every few seconds) are measured from the last interval instead, so they do not
    read 0 while frames flow; that estimate decays as 1/(time since the last event) and drops to
    0 once the stream has been quiet for 3 intervals.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = float(window_s)
        self._times: deque[float] = deque()
        self._last_two: deque[float] = deque(maxlen=2)

    def tick(self, now: float | None = None) -> None:
        """Record one event at `now` (default: time.monotonic())."""
        t = time.monotonic() if now is None else now
        self._times.append(t)
        self._last_two.append(t)
        self._trim(t)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        """Events per second over the window; 0.0 with fewer than 2 events in it."""
        t = time.monotonic() if now is None else now
        self._trim(t)
        n = len(self._times)
        if n < 2:
            if len(self._last_two) < 2:
                return 0.0
            interval = self._last_two[1] - self._last_two[0]
            quiet = t - self._last_two[1]
            if interval <= 0 or quiet > 3 * interval:
                return 0.0
            return 1.0 / max(interval, quiet)
        # n events span n-1 intervals; extend to `now` so a stopped stream decays to 0.
        span = max(t - self._times[0], self._times[-1] - self._times[0])
        return (n - 1) / span if span > 0 else 0.0


class LatencyWindow:
    """The last `maxlen` latency samples (ms) and their percentiles."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._samples: deque[float] = deque(maxlen=maxlen)

    def add(self, ms: float) -> None:
        self._samples.append(float(ms))

    def percentile(self, q: float) -> float:
        """q in [0, 100]; NaN when empty (nearest-rank, no interpolation)."""
        if not self._samples:
            return math.nan
        data = sorted(self._samples)
        k = min(len(data) - 1, max(0, math.ceil(q / 100.0 * len(data)) - 1))
        return data[k]

    def __len__(self) -> int:
        return len(self._samples)


class InputLossMonitor:
    """Images lost before they reach the node, seen through their camera_info.

    A camera driver publishes one camera_info per image with the image's stamp. camera_info is
    small and crosses any transport; a large best-effort image can be dropped on the way
    (Fast DDS's default shared-memory segment is too small for it and fragmented UDP loses it).
    An info stamp with no image of that stamp `grace_s` after it arrived is a missing image.
    Counted only once the driver is seen pairing stamps (some info matched an image), or when
    no image arrived at all, so a driver that stamps the two differently raises no false alarm.
    Thread-safe.
    """

    def __init__(self, grace_s: float = 1.0, memory: int = 512) -> None:
        self.grace_s = float(grace_s)
        self._lock = threading.Lock()
        self._image_stamps: deque[int] = deque(maxlen=memory)
        self._image_set: set[int] = set()
        self._pending: deque[tuple[int, float]] = deque(maxlen=memory)
        self.infos = 0
        self.images = 0
        self._unmatched = 0
        self._paired = False

    def on_image(self, stamp_ns: int) -> None:
        with self._lock:
            self.images += 1
            if len(self._image_stamps) == self._image_stamps.maxlen:
                self._image_set.discard(self._image_stamps[0])
            self._image_stamps.append(stamp_ns)
            self._image_set.add(stamp_ns)

    def on_info(self, stamp_ns: int, now: float | None = None) -> None:
        with self._lock:
            self.infos += 1
            self._pending.append((stamp_ns, time.monotonic() if now is None else now))

    def missing(self, now: float | None = None) -> int:
        """Images known lost so far (settles infos older than grace_s)."""
        t = time.monotonic() if now is None else now
        with self._lock:
            while self._pending and t - self._pending[0][1] >= self.grace_s:
                stamp, _ = self._pending.popleft()
                if stamp in self._image_set:
                    self._paired = True
                else:
                    self._unmatched += 1
            return self._unmatched if self._paired or self.images == 0 else 0


@dataclass
class CameraStats:
    """Counters and meters of one camera; every method is thread-safe."""

    rate_window_s: float = 5.0
    received: int = 0       # messages that reached the callback (valid or not)
    published: int = 0      # derained or passed-through frames published
    dropped: int = 0        # valid frames overwritten before inference (keep-latest)
    rejected: int = 0       # malformed messages refused
    errors: int = 0         # inference failures
    skipped: int = 0        # frames not published after an inference failure
    passthrough: int = 0    # frames published unchanged (disabled, or error + passthrough)
    rejected_by_kind: Counter[str] = field(default_factory=Counter)
    last_error: str = ''
    last_encoding: str = ''
    last_size: str = ''
    last_input_mono: float = -math.inf

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.in_rate = RateMeter(self.rate_window_s)
        self.out_rate = RateMeter(self.rate_window_s)
        self.latency = LatencyWindow()
        self.inference = LatencyWindow()

    def on_input(self, encoding: str, width: int, height: int) -> None:
        with self._lock:
            self.received += 1
            self.last_input_mono = time.monotonic()
            self.in_rate.tick(self.last_input_mono)
            self.last_encoding = encoding
            if width and height:  # compressed input: the size is known only after decoding
                self.last_size = f'{width}x{height}'

    def on_reject(self, kind: str, reason: str, received: bool = True) -> None:
        """received: also count the message as received (False when it was already counted, as a
        compressed frame that passed the callback and failed to decode in the worker)."""
        with self._lock:
            self.received += int(received)
            self.rejected += 1
            self.rejected_by_kind[kind] += 1
            self.last_error = reason

    def on_drop(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def on_error(self, reason: str, published: bool) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = reason
            if not published:
                self.skipped += 1

    def on_publish(self, latency_ms: float, inference_ms: float | None,
                   passthrough: bool = False) -> None:
        with self._lock:
            self.published += 1
            self.out_rate.tick()
            self.latency.add(latency_ms)
            if inference_ms is not None:
                self.inference.add(inference_ms)
            if passthrough:
                self.passthrough += 1

    def snapshot(self) -> dict[str, float | int | str]:
        """Plain values for diagnostics and tests."""
        with self._lock:
            now = time.monotonic()
            snap: dict[str, float | int | str] = {
                'input_rate_hz': self.in_rate.rate(now),
                'output_rate_hz': self.out_rate.rate(now),
                'latency_p50_ms': self.latency.percentile(50),
                'latency_p99_ms': self.latency.percentile(99),
                'inference_p50_ms': self.inference.percentile(50),
                'inference_p99_ms': self.inference.percentile(99),
                'received': self.received, 'published': self.published,
                'dropped': self.dropped, 'rejected': self.rejected,
                'inference_errors': self.errors, 'skipped': self.skipped,
                'passthrough': self.passthrough,
                'seconds_since_input': now - self.last_input_mono,
                'encoding': self.last_encoding, 'resolution': self.last_size,
                'last_error': self.last_error,
            }
            for kind, n in sorted(self.rejected_by_kind.items()):
                snap[f'rejected.{kind}'] = n
        return snap


def assess(snap: dict[str, float | int | str], latency_warn_ms: float, rate_warn_ratio: float,
           enabled: bool, errors_since_last: int = 0, rejected_since_last: int = 0,
           idle_after_s: float = 5.0, missing_since_last: int = 0,
           loss_fix: str = '') -> tuple[str, str]:
    """Level ('OK' | 'WARN' | 'ERROR') and a one-line message for one camera.

    WARN when the output rate falls below `rate_warn_ratio` x the input rate, when latency p99
    passes `latency_warn_ms`, when messages were rejected, or when images were lost before they
    reached the node (`missing_since_last`, see InputLossMonitor; `loss_fix` says what to do),
    since the last report; ERROR when inference failed since the last report.
    """
    in_hz, out_hz = float(snap['input_rate_hz']), float(snap['output_rate_hz'])
    p99 = float(snap['latency_p99_ms'])
    problems: list[str] = []
    level = 'OK'
    if errors_since_last:
        level = 'ERROR'
        problems.append(f'{errors_since_last} inference failures: {snap["last_error"]}')
    if rejected_since_last:
        problems.append(f'rejected {rejected_since_last} messages: {snap["last_error"]}')
    if missing_since_last:
        problems.append(f'input loss: {missing_since_last} images never arrived although their '
                        f'camera_info did{"; " + loss_fix if loss_fix else ""}')
    if in_hz > 0 and out_hz < rate_warn_ratio * in_hz:
        problems.append(f'falling behind: output {out_hz:.1f} Hz < {rate_warn_ratio:g} x input '
                        f'{in_hz:.1f} Hz (newest frames kept, older dropped)')
    if not math.isnan(p99) and p99 > latency_warn_ms:
        problems.append(f'latency p99 {p99:.0f} ms > {latency_warn_ms:g} ms')
    if problems and level == 'OK':
        level = 'WARN'
    if problems:
        return level, '; '.join(problems)
    if float(snap['seconds_since_input']) > idle_after_s:
        return 'OK', 'idle: no input'
    return 'OK', f'{"deraining" if enabled else "passthrough (disabled)"} at {out_hz:.1f} Hz'
