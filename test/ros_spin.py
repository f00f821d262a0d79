"""In-process node tests: nodes spun by a background executor, and waiting on a condition.

Shared by the node tests that run a DerainNode in the test's own process on a private context
(`test_ros_node.py`, `test_ros_live.py`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from rclpy.executors import MultiThreadedExecutor


class BackgroundSpin:
    """Spin `spun` on a two-thread executor in a daemon thread.

    ``close()`` stops the executor, destroys the spun nodes and ``also_destroy``, shuts the
    context down and joins the thread, in that order.
    """

    def __init__(self, ctx: Any, spun: Sequence[Any], also_destroy: Sequence[Any] = ()) -> None:
        self.ctx = ctx
        self.nodes = list(spun) + list(also_destroy)
        self.executor = MultiThreadedExecutor(num_threads=2, context=ctx)
        for node in spun:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        rclpy.shutdown(context=self.ctx)
        self.thread.join(timeout=10)


def wait_until(pred: Callable[[], Any], timeout: float, poll: float = 0.02) -> bool:
    """Poll `pred` until it is true or `timeout` seconds passed; its last value as a bool."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        time.sleep(poll)
    return bool(pred())
