"""The Derainer's bounds: per-stream entries (idle expiry, LRU cap), the pixel budget, the
minimum size, reset reasons given by callers and throttled reset logs.

A stand-in backend counts the frames each stream state has carried, so the tests see exactly
when a state was kept, reset or forgotten, and run in milliseconds without a model.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from rainmamba_core.streaming.derainer import CPU_PIXEL_BUDGET, MIN_SIZE, Derainer, DerainerError
from rainmamba_core.streaming.timeline import StampTimeline


class CountingBackend:
    """Streaming backend whose state is the number of frames stepped since the last reset; the
    output frame is filled with that number, so a test reads the carried state off the output."""

    name = 'standin'
    streaming = True
    window = 3

    def __init__(self, device: str = 'cpu') -> None:
        self.device = device
        self.sizes: list[tuple[int, int]] = []   # (h, w) the model saw, per step

    def new_state(self, height: int, width: int) -> int:
        return 0

    def step(self, frames: np.ndarray, states: list) -> tuple[np.ndarray, list, list[bool]]:
        self.sizes.extend([tuple(frames.shape[1:3])] * len(frames))
        new = [s + 1 for s in states]
        out = np.stack([np.full(f.shape, n, np.uint8) for f, n in zip(frames, new)])
        return out, new, [True] * len(new)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _frame(h: int = 16, w: int = 24) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def _carried(out: np.ndarray) -> int:
    return int(out[0, 0, 0])


# ------------------------------------------------------------------------------ stream entries
def test_idle_streams_expire() -> None:
    clock = FakeClock()
    d = Derainer(backend=CountingBackend(), stream_idle_s=60.0, clock=clock)
    for i in range(100):                       # one id per image: the pattern that leaked
        d.process(f'img{i}', _frame())
    d.process('cam', _frame())
    clock.now += 30.0
    assert _carried(d.process('cam', _frame())) == 2     # 30 s < 60 s: the state is carried
    clock.now += 45.0                                    # img* idle 75 s, cam idle 45 s
    assert _carried(d.process('cam', _frame())) == 3
    counters = d.counters
    assert counters['streams'] == 1, f"idle streams kept: {counters['streams']} entries, expected only 'cam'"
    # every one-off id is forgotten: 37 beyond the cap of 64 (100 ids + 'cam'), the other 63 idle
    assert counters['expired'] == 100, counters
    clock.now += 61.0
    assert _carried(d.process('cam', _frame())) == 1, 'a stream idle past stream_idle_s must start fresh'


def test_least_recently_used_streams_beyond_the_cap_are_forgotten() -> None:
    d = Derainer(backend=CountingBackend(), max_streams=4)
    for _ in range(3):
        d.process('keep', _frame())
    for i in range(10):
        d.process(f'img{i}', _frame())
        d.process('keep', _frame())                # used every time: never the least recent
    assert d.counters['streams'] == 4 and d.counters['expired'] == 10 - 3
    assert _carried(d.process('keep', _frame())) == 14   # never forgotten, state carried throughout
    assert _carried(d.process('img0', _frame())) == 1    # forgotten long ago: starts fresh
    # A batch larger than the cap is still served whole.
    outs = d.process_batch([(f'b{i}', _frame(), None) for i in range(6)])
    assert len(outs) == 6


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(DerainerError, match='max_streams >= 1'):
        Derainer(backend=CountingBackend(), max_streams=0)
    with pytest.raises(DerainerError, match='max_pixels must be >= -1'):
        Derainer(backend=CountingBackend(), max_pixels=-2)


# ------------------------------------------------------------------------------ sizes
def test_auto_pixel_budget_on_cpu_downscales_and_restores(caplog: pytest.LogCaptureFixture) -> None:
    backend = CountingBackend('cpu')
    d = Derainer(backend=backend, max_pixels=-1)
    assert d.max_pixels == CPU_PIXEL_BUDGET
    with caplog.at_level(logging.INFO, logger='rainmamba_core.streaming.derainer'):
        for _ in range(3):
            out = d.process('cam', _frame(1080, 1920))
    assert out.shape == (1080, 1920, 3)                 # restored to the input size
    h, w = backend.sizes[-1]
    assert h * w <= CPU_PIXEL_BUDGET, f'model saw {w}x{h} = {h * w} px, budget {CPU_PIXEL_BUDGET}'
    # within one pixel per side of the budget's 16:9 shape (floor rounding)
    assert abs(w - 738) <= 1 and abs(h - 415) <= 1, (w, h)
    said = [r.getMessage() for r in caplog.records if 'derained at' in r.getMessage()]
    assert len(said) == 1, f'the downscale should be said once per stream and size, got {said}'
    assert '1920x1080' in said[0] and 'auto on cpu' in said[0]
    assert _carried(out) == 3                            # the state is carried at the smaller size


def test_pixel_budget_auto_is_off_on_cuda_and_explicit_budgets_apply() -> None:
    assert Derainer(backend=CountingBackend('cuda:0'), max_pixels=-1).max_pixels == 0
    assert 'full resolution' in Derainer(backend=CountingBackend('cuda:0'), max_pixels=-1).size_bound
    backend = CountingBackend()
    d = Derainer(backend=backend, max_pixels=10_000)
    d.process('cam', _frame(100, 100))                   # exactly the budget: untouched
    d.process('cam2', _frame(200, 100))
    assert backend.sizes == [(100, 100), (141, 70)]      # floor(200/sqrt2), floor(100/sqrt2)


def test_minimum_size_is_exposed_and_refused() -> None:
    d = Derainer(backend=CountingBackend())
    assert d.min_size == MIN_SIZE == 8
    d.process('cam', _frame(8, 8))
    with pytest.raises(DerainerError, match='too small'):
        d.process('cam', _frame(7, 8))


# ------------------------------------------------------------------------------ resets
def test_caller_judged_resets_count_under_their_reason() -> None:
    d = Derainer(backend=CountingBackend())
    d.process('cam', _frame())
    d.reset('cam', 'gap', 'received stamps 5 s apart')
    assert d.counters['resets']['gap'] == 1 and d.counters['resets']['request'] == 0
    assert _carried(d.process('cam', _frame())) == 1
    with pytest.raises(DerainerError, match="reset reason 'pause'"):
        d.reset('cam', 'pause')


def test_resets_are_logged_throttled_and_all_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    d = Derainer(backend=CountingBackend(), gap_reset_s=1.0, log_every_s=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger='rainmamba_core.streaming.derainer'):
        for i in range(20):                          # a stamp every 2 s: a gap every frame
            d.process('cam', _frame(), i * 2 * 10**9)
            clock.now += 1.0
    lines = [r.getMessage() for r in caplog.records if 'reset' in r.getMessage()]
    assert d.counters['resets']['gap'] == 19
    # 19 resets over 19 s at most one line per 10 s: the first, and one 10 s later
    assert len(lines) == 2, lines
    assert 'received stamps 2.000 s apart' in lines[0]
    assert '9 more gap resets not logged' in lines[1], lines[1]


def test_stamp_timeline_breaks() -> None:
    t = StampTimeline(gap_ns=10**9)
    assert [t.observe(s) for s in (0, 5 * 10**8, 10**9, None, 3 * 10**9, 2 * 10**9)] == \
        [None, None, None, None, 'gap', 'time_backwards']
    assert t.breaks == 2 and t.reason == 'time_backwards'
    t.forget()
    assert t.observe(0) is None
