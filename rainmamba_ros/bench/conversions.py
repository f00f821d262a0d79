"""Timing of the image conversions alone (message <-> RGB), for every wire encoding."""
from __future__ import annotations

import time

import numpy as np

from rainmamba_ros.conversions import (
    SUPPORTED_ENCODINGS,
    ImageRecord,
    as_msg_data,
    extract_alpha,
    image_to_rgb,
    rgb_to_image_fields,
)


def benchmark(width: int = 640, height: int = 480, repeats: int = 50,
              encodings: tuple[str, ...] = SUPPORTED_ENCODINGS) -> dict[str, dict[str, float]]:
    """Time decode (message -> RGB) and encode (RGB -> message bytes, incl. `as_msg_data`).

    Returns:
        {encoding: {'in_ms': median ms, 'out_ms': median ms, 'total_ms': sum}}.
    """
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    results: dict[str, dict[str, float]] = {}
    for enc in encodings:
        flat, step = rgb_to_image_fields(rgb, enc)
        msg = ImageRecord(height, width, enc, step, as_msg_data(flat))
        alpha = extract_alpha(msg)
        t_in, t_out = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = image_to_rgb(msg)
            t1 = time.perf_counter()
            as_msg_data(rgb_to_image_fields(out, enc, alpha)[0])
            t2 = time.perf_counter()
            t_in.append(t1 - t0)
            t_out.append(t2 - t1)
        i, o = float(np.median(t_in)) * 1e3, float(np.median(t_out)) * 1e3
        results[enc] = {'in_ms': i, 'out_ms': o, 'total_ms': i + o}
    return results
