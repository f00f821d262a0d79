"""A model stand-in whose output is a known function of its RGB input, and image bytes made by hand.

Tests that check only stamps, sizes and encodings pass with the red and blue channels swapped,
a wrong crop or two cameras cross-wired. With `ColourRotateBackend` behind the public facade
(`Derainer(backend=ColourRotateBackend())`) every output pixel is known: out = rgb[..., [1, 2, 0]]
(red <- green, green <- blue, blue <- red), a permutation that no R/B swap leaves unchanged, on
either side of the model or on both. The message bytes are built and read here with numpy alone,
not with rainmamba_ros.conversions, so a conversion bug cannot cancel itself out.
"""
from __future__ import annotations

import threading

import numpy as np

HAND_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')


def colour_rotate(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (..., 3) with R <- G, G <- B, B <- R."""
    return np.ascontiguousarray(rgb[..., [1, 2, 0]])


class ColourRotateBackend:
    """The `Backend` interface (rainmamba_core.backends.base) with out = colour_rotate(in).

    `gate`: while cleared, `step` blocks after counting itself in `started` (tests hold the worker
    inside inference to make back-pressure deterministic). `batches` records each step's stream
    count.
    """

    name = 'colour_rotate'
    device = 'cpu'
    streaming = True
    window = 2

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = 0
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def new_state(self, height: int, width: int) -> int:
        return 0  # frames seen by the stream: carried like a real state

    def step(self, frames: np.ndarray, states: list[int]) -> tuple[np.ndarray, list[int], list[bool]]:
        with self._lock:
            self.started += 1
            self.batches.append(len(frames))
        self.gate.wait()
        return colour_rotate(frames), [s + 1 for s in states], [True] * len(states)

    def run_clip(self, clips: np.ndarray) -> np.ndarray:
        return colour_rotate(clips[:, -1])


def encode_by_hand(rgb: np.ndarray, encoding: str, alpha: np.ndarray | None = None) -> tuple[bytes, int]:
    """(H, W, 3) RGB -> (row-major bytes, step) of a sensor_msgs/Image in `encoding`."""
    h, w, _ = rgb.shape
    if alpha is None:
        alpha = np.full((h, w), 255, np.uint8)
    pixels = {
        'rgb8': lambda: rgb,
        'bgr8': lambda: rgb[..., ::-1],
        'rgba8': lambda: np.dstack([rgb, alpha]),
        'bgra8': lambda: np.dstack([rgb[..., ::-1], alpha]),
        'mono8': lambda: rgb[..., 0],   # callers pass gray images (R = G = B) for mono8
    }[encoding]()
    arr = np.ascontiguousarray(pixels)
    return arr.tobytes(), arr.strides[0]


def decode_by_hand(data: bytes, height: int, width: int, step: int, encoding: str) -> np.ndarray:
    """The inverse of `encode_by_hand` for its encodings: -> (H, W, 3) RGB (mono8 replicated)."""
    rows = np.frombuffer(bytes(data), np.uint8).reshape(height, step)
    channels = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}[encoding]
    px = rows[:, :width * channels].reshape(height, width, channels)
    if encoding == 'mono8':
        return np.repeat(px, 3, axis=2)
    rgb = px[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if encoding.startswith('bgr') else rgb)


def scene(seed: int, h: int, w: int) -> np.ndarray:
    """A picture whose three channels all differ everywhere (a swap or a shift shows)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([20 + 3 * xx, 90 + 2 * yy, 200 - xx - yy], -1) + rng.integers(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)
