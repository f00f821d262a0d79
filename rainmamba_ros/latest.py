"""Keep-latest mailbox between subscription callbacks and the inference worker.

Callbacks only overwrite one slot per camera; the worker takes every filled slot at once. A frame
overwritten before the worker took it is dropped and counted, so latency never grows with load:
there is no queue to build up.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Generic, TypeVar

T = TypeVar('T')


class LatestFrames(Generic[T]):
    """One slot per key holding the newest item; thread-safe.

    Attributes:
        dropped: Counter {key: items overwritten before the worker took them}.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slots: dict[str, T] = {}
        self._closed = False
        self.dropped: Counter[str] = Counter()

    def put(self, key: str, item: T) -> bool:
        """Store `item` as the newest for `key`; True when an untaken older item was dropped."""
        with self._cond:
            replaced = key in self._slots
            if replaced:
                self.dropped[key] += 1
            self._slots[key] = item
            self._cond.notify()
        return replaced

    def take_all(self, timeout: float | None = None) -> dict[str, T]:
        """Wait until at least one slot is filled (or timeout / close) and empty every slot.

        Returns:
            {key: newest item}; empty on timeout or after `close()`.
        """
        with self._cond:
            if not self._slots and not self._closed:
                self._cond.wait(timeout)
            out, self._slots = self._slots, {}
        return out

    def clear(self) -> int:
        """Discard pending items without counting them as dropped; returns how many."""
        with self._cond:
            n = len(self._slots)
            self._slots = {}
        return n

    def close(self) -> None:
        """Wake any waiting `take_all` for shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._slots)
