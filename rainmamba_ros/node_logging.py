"""Logging in the node's process: Python logging forwarded to the node's logger, OpenCV quiet."""
from __future__ import annotations

import logging

from rclpy.node import Node


class RosLogHandler(logging.Handler):
    """Forward Python `logging` from rainmamba_core (e.g. Derainer resets) to the node logger."""

    def __init__(self, node: Node) -> None:
        super().__init__(logging.INFO)
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        text = f'[{record.name}] {record.getMessage()}'
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        else:
            self._logger.info(text)


def quiet_opencv() -> None:
    """Silence OpenCV's own log (below FATAL) in the node's process.

    OpenCV prints an unthrottled `[ERROR:0@...] grfmt_png.cpp ...` line for every undecodable
    compressed frame; the node already reports each one itself (rejected.decode, logged at most
    once per error_throttle_s). libjpeg's "Corrupt JPEG data" warnings bypass OpenCV's log and
    still reach stderr.
    """
    import cv2
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    except AttributeError:  # an OpenCV build without utils.logging: its log stays as it is
        pass
