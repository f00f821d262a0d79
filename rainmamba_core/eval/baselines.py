"""Baselines scored beside the model: the rainy input itself and a causal temporal median.

Each is a clip function (T, H, W, 3) uint8 -> (T, H, W, 3) uint8, like a model's.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

ClipFn = Callable[[np.ndarray], np.ndarray]


def rainy_input(clip: np.ndarray) -> np.ndarray:
    """The identity: what a camera without deraining delivers."""
    return clip


def temporal_median(clip: np.ndarray, window: int = 5) -> np.ndarray:
    """Causal per-pixel median of the last `window` frames (fewer at the start of the clip).

    Rain streaks rarely cover the same pixel in most of 5 frames, so on a static camera the
    median removes them; on a moving camera it blurs. Causal, so it could run on a robot too.

    Args:
        clip: (T, H, W, 3) uint8.
    """
    out = np.empty_like(clip)
    for t in range(clip.shape[0]):
        lo = max(0, t - window + 1)
        # uint8 median of an even count averages two values: round half up like cv2 would
        out[t] = np.round(np.median(clip[lo:t + 1], axis=0) + 1e-6).astype(np.uint8)
    return out


BASELINES: dict[str, ClipFn] = {'rainy_input': rainy_input, 'temporal_median5': temporal_median}
