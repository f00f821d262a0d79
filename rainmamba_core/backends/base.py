"""The interface every inference backend (PyTorch, ONNX Runtime) offers to the Derainer.

Frames cross this boundary as uint8 numpy arrays so the Derainer (and everything above it: the
ROS node, bag replay) never touches tensors. Stream states are opaque handles owned by a backend.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

StateHandle = Any


class Backend(Protocol):
    name: str          # 'torch' | 'onnxruntime'
    device: str        # e.g. 'cpu', 'cuda:0', 'CUDAExecutionProvider'
    streaming: bool    # True when the model can step (causal); False: windowed only
    window: int        # frames per clip for windowed inference

    def new_state(self, height: int, width: int) -> StateHandle:
        """A zero stream state for frames of this size (batch of one)."""

    def step(self, frames: np.ndarray, states: list[StateHandle]) -> tuple[np.ndarray, list[StateHandle], list[bool]]:
        """One streaming step. frames: (B, H, W, 3) uint8 RGB, one state per element.

        Returns derained (B, H, W, 3) uint8, the new states, and per element whether the new
        state is finite (False: the caller resets that stream).
        """

    def run_clip(self, clips: np.ndarray) -> np.ndarray:
        """Windowed inference. clips: (B, T, H, W, 3) uint8 -> newest frames (B, H, W, 3) uint8."""
