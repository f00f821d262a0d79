"""Endless procedural scenes for training: texture, facades and thin structure, no data needed.

The clean footage this package trains on is a handful of scenes: five dash-cam drives, a car park,
a corridor, 75 stills. NTURain a2, the validation clip the default does worst on, is a scene of a
kind the training data hardly has: a bright facade full of windows, mullions and balcony rails,
palm fronds, thin poles, crisp and textured; the model leaves most streaks over it in place
(`MODEL_CARD.md`, "Tried" (33): synthetic rain over a2's own frames gains as little as its real
rain). :func:`procedural_scene` draws a new scene from a generator every time, in the spirit of
"dead leaves" images (random occluding shapes with power-law sizes, the statistics of natural
images) with the structures a street camera sees added on top:

* **dead leaves**: 60-220 shapes (rectangles, rotated boxes, ellipses, triangles), sizes
  drawn from a power law, colours from a small per-scene palette, each filled flat, shaded or with
  texture at one of three scales;
* **facades** (about half the scenes, one or two): window grids with frames, mullions and
  balcony rails (thin bars a few pixels apart), light or dark;
* **thin structure**: poles, posts and wires, mostly upright, light or dark, 1-4 px wide;
* **foliage** (some scenes): clusters of small leaf blobs and thin fronds;
* **exposure**: a per-scene tone curve from dim to bright and washed out, then a little optical
  blur and sensor noise.

`VideoRainDataset(procedural_prob=...)` makes that share of training clips from such scenes with
simulated camera motion (the still path). Each call with a generator in a given state returns the
same image (a test checks it).

Dimension letters: H height, W width.
"""
from __future__ import annotations

import cv2
import numpy as np

from .datasets import DatasetError


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """n RGB colours in [0, 255]: mostly greys and muted colours, a few saturated ones."""
    grey = rng.uniform(20, 235, (n, 1))
    tint = rng.normal(0, 1, (n, 3))
    sat = np.where(rng.random((n, 1)) < 0.2, rng.uniform(40, 110, (n, 1)), rng.uniform(0, 25, (n, 1)))
    return np.clip(grey + tint / np.linalg.norm(tint, axis=1, keepdims=True) * sat, 0, 255)


def _noise_field(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    f = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
    return f / max(float(f.std()), 1e-6)


def _dead_leaves(rng: np.random.Generator, h: int, w: int, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32: occluding random shapes with power-law sizes and per-shape texture."""
    ids = np.zeros((h, w), np.float32)
    n = int(rng.integers(60, 220))
    r_min, r_max = 5.0, 0.45 * min(h, w)
    # radius ~ r_min * u^(-0.7), cut at r_max: many small shapes, some large (drawn largest first)
    radii = np.sort(np.minimum(r_min * rng.uniform(1e-3, 1, n) ** -0.7, r_max))[::-1]
    for i, r in enumerate(radii, start=1):
        cx, cy = rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(-0.1 * h, 1.1 * h)
        kind = rng.random()
        if kind < 0.4:  # axis-aligned box (buildings, signs, doors)
            a, b = r * rng.uniform(0.3, 1.5), r * rng.uniform(0.3, 1.5)
            cv2.rectangle(ids, (int(cx - a), int(cy - b)), (int(cx + a), int(cy + b)), float(i), -1)
        elif kind < 0.6:  # rotated box
            box = cv2.boxPoints(((cx, cy), (2 * r * rng.uniform(0.3, 1.5), 2 * r * rng.uniform(0.3, 1.5)),
                                 rng.uniform(0, 180)))
            cv2.fillPoly(ids, [np.round(box).astype(np.int32)], float(i))
        elif kind < 0.85:  # ellipse
            cv2.ellipse(ids, (int(cx), int(cy)), (max(int(r), 1), max(int(r * rng.uniform(0.3, 1)), 1)),
                        rng.uniform(0, 180), 0, 360, float(i), -1)
        else:  # triangle
            pts = np.array([cx, cy]) + rng.uniform(-r, r, (3, 2))
            cv2.fillPoly(ids, [np.round(pts).astype(np.int32)], float(i))
    ids = ids.astype(np.int64)
    colour = palette[rng.integers(len(palette), size=n + 1)] + rng.normal(0, 12, (n + 1, 3))
    fields = [_noise_field(rng, h, w, s) for s in (0.6, 2.0, 6.0)]
    which = rng.integers(len(fields), size=n + 1)
    amp = np.where(rng.random(n + 1) < 0.6, rng.uniform(2, 30, n + 1), 0.0)
    field_of = which[ids]  # which texture field each pixel takes (looked up once)
    tex = np.zeros((h, w), np.float32)
    for k, f in enumerate(fields):
        sel = field_of == k
        tex[sel] = f[sel]
    img = colour[ids].astype(np.float32) + (amp[ids] * tex)[..., None]
    # shading: a coarse brightness ramp across the frame (sun, shadow)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (gx / w - 0.5) * rng.uniform(-40, 40) + (gy / h - 0.5) * rng.uniform(-40, 40)
    return img + ramp[..., None]


def _facade(img: np.ndarray, rng: np.random.Generator, palette: np.ndarray) -> None:
    """Paint one building face with a window grid, mullions and balcony rails, in place."""
    h, w = img.shape[:2]
    x0, y0 = int(rng.uniform(-0.2, 0.7) * w), int(rng.uniform(-0.2, 0.6) * h)
    fw, fh = int(rng.uniform(0.25, 0.9) * w), int(rng.uniform(0.25, 0.9) * h)
    wall = palette[rng.integers(len(palette))] + rng.uniform(-20, 20)
    cv2.rectangle(img, (x0, y0), (x0 + fw, y0 + fh), tuple(float(v) for v in wall), -1)
    cw, ch = rng.uniform(8, 40), rng.uniform(10, 45)  # cell size
    win_w, win_h = cw * rng.uniform(0.4, 0.85), ch * rng.uniform(0.4, 0.85)
    glass = np.clip(wall * rng.uniform(0.1, 0.6) + rng.uniform(0, 40), 0, 255)
    frame = np.clip(wall + rng.uniform(-60, 60), 0, 255)
    mullion = rng.random() < 0.6
    rails = rng.random() < 0.4
    bar = int(rng.integers(1, 3))
    for yy in np.arange(y0 + 3, y0 + fh - win_h, ch):
        for xx in np.arange(x0 + 3, x0 + fw - win_w, cw):
            if rng.random() < 0.1:
                continue
            g = np.clip(glass + rng.normal(0, 15, 3), 0, 255)
            p0, p1 = (int(xx), int(yy)), (int(xx + win_w), int(yy + win_h))
            cv2.rectangle(img, p0, p1, tuple(float(v) for v in g), -1)
            cv2.rectangle(img, p0, p1, tuple(float(v) for v in frame), bar)
            if mullion:
                xm = int(xx + win_w / 2)
                cv2.line(img, (xm, int(yy)), (xm, int(yy + win_h)), tuple(float(v) for v in frame), bar)
        if rails:  # a balcony rail below each floor: a top bar and thin uprights a few px apart
            yr = int(yy + win_h + 2)
            rail = tuple(float(v) for v in np.clip(frame + rng.uniform(-30, 30), 0, 255))
            cv2.line(img, (x0, yr), (x0 + fw, yr), rail, 1)
            step = int(rng.integers(3, 9))
            for xr in range(x0, x0 + fw, step):
                cv2.line(img, (xr, yr), (xr, int(yr + ch * 0.3)), rail, 1)


def _thin_lines(img: np.ndarray, rng: np.random.Generator) -> None:
    """Poles, posts and wires: mostly upright, light or dark, 1-4 px wide, in place."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(2, 16))):
        upright = rng.random() < 0.75
        length = rng.uniform(0.15, 1.0) * (h if upright else w)
        ang = np.deg2rad(rng.uniform(-12, 12) + (0 if upright else 90))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        p1 = (int(x + np.sin(ang) * length), int(y + np.cos(ang) * length))
        grey = rng.uniform(200, 255) if rng.random() < 0.5 else rng.uniform(10, 90)
        colour = tuple(float(np.clip(grey + rng.normal(0, 10), 0, 255)) for _ in range(3))
        cv2.line(img, (int(x), int(y)), p1, colour, int(rng.integers(1, 5)), cv2.LINE_AA)


def _foliage(img: np.ndarray, rng: np.random.Generator) -> None:
    """Clusters of small leaf blobs and thin curved fronds, in place."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 5))):
        cx, cy, spread = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 0.3 * min(h, w))
        base = np.array([rng.uniform(20, 90), rng.uniform(50, 150), rng.uniform(20, 80)])
        m = int(rng.integers(40, 200))
        centres = np.round(np.array([cx, cy]) + rng.normal(0, spread, (m, 2))).astype(int)
        colours = np.clip(base * rng.uniform(0.5, 1.6, (m, 1)), 0, 255).tolist()
        axes, angles = rng.integers(1, [6, 3], (m, 2)).tolist(), rng.uniform(0, 180, m).tolist()
        for p, c, ax, an in zip(centres.tolist(), colours, axes, angles):
            cv2.ellipse(img, tuple(p), tuple(ax), an, 0, 360, tuple(c), -1)
        for _ in range(int(rng.integers(0, 8))):  # fronds: a bent polyline from the cluster's centre
            ang, bend, n = rng.uniform(0, 2 * np.pi), rng.uniform(-0.05, 0.05), 12
            pts, p = [], np.array([cx, cy])
            for k in range(n):
                pts.append(p.copy())
                p = p + 4 * np.array([np.cos(ang + bend * k * k), np.sin(ang + bend * k * k)])
            c = tuple(float(v) for v in np.clip(base * rng.uniform(0.4, 1.2), 0, 255))
            cv2.polylines(img, [np.round(np.array(pts)).astype(np.int32)], False, c, 1, cv2.LINE_AA)


def _exposure(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A per-scene exposure: (gain, gamma, blur sigma, noise sigma)."""
    gain, gamma = rng.uniform(0.7, 1.4), np.exp(rng.uniform(-0.7, 0.4))
    return float(gain), float(gamma), float(rng.uniform(0.0, 1.0)), float(rng.uniform(0, 2.5))


def _expose(img: np.ndarray, exposure: tuple[float, float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Dim to bright and washed out (a gain and a gamma), then optics and sensor: (H, W, 3) uint8."""
    gain, gamma, sigma, noise = exposure
    x = (np.clip(np.clip(img, 0, 255) / 255.0 * gain, 0, 1) ** gamma) * 255.0
    if sigma > 0.3:
        x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma)
    x = x + rng.normal(0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _check_size(h: int, w: int, what: str) -> None:
    if h < 32 or w < 32:
        raise DatasetError(f'{what}: size {h}x{w} is too small; expected at least 32x32')


def _background(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The scene before exposure: (H, W, 3) float32 and its palette."""
    palette = _palette(rng, int(rng.integers(3, 9)))
    img = _dead_leaves(rng, h, w, palette)
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.7 else 0):
        _facade(img, rng, palette)
    if rng.random() < 0.7:
        _thin_lines(img, rng)
    if rng.random() < 0.5:
        _foliage(img, rng)
    return img, palette


def procedural_scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A new random scene (module docstring).

    Args:
        h, w: size in pixels (at least 32 each).
        rng: the generator the scene is drawn from (the same state gives the same scene).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    _check_size(h, w, 'procedural_scene')
    img, _ = _background(h, w, rng)
    return _expose(img, _exposure(rng), rng)


def _foreground(img: np.ndarray, rng: np.random.Generator, palette: np.ndarray) -> None:
    """What stands in front of a scene, drawn in place: posts and trunks, poles, fronds."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 4))):  # posts, trunks, sign boards: a few solid boxes
        bw, bh = rng.uniform(0.02, 0.12) * w, rng.uniform(0.2, 1.0) * h
        x, y = rng.uniform(-0.05 * w, w), rng.uniform(0.0, h - 0.5 * bh)
        colour = tuple(float(v) for v in palette[int(rng.integers(len(palette)))])
        cv2.rectangle(img, (int(x), int(y)), (int(x + bw), int(y + bh)), colour, -1)
    _thin_lines(img, rng)
    if rng.random() < 0.6:
        _foliage(img, rng)


def procedural_layers(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene and a layer in front of it, for clips with parallax (the layer moves more).

    The background is :func:`procedural_scene`'s; the foreground is posts, poles, wires and fronds
    on nothing. It is drawn twice from the same generator state, over black and over white: where
    it covers a pixel both agree, and their difference gives its coverage exactly. Both layers go
    through the scene's one exposure.

    Args:
        h, w: size in pixels (at least 32 each).
        rng: the generator the layers are drawn from (the same state gives the same layers).

    Returns:
        background (H, W, 3) uint8, foreground colour (H, W, 3) uint8 and its coverage (H, W)
        float32 in [0, 1].
    """
    _check_size(h, w, 'procedural_layers')
    back, palette = _background(h, w, rng)
    state = rng.bit_generator.state
    drawn = []
    for fill in (0.0, 255.0):
        rng.bit_generator.state = state
        layer = np.full((h, w, 3), fill, np.float32)
        _foreground(layer, rng, palette)
        drawn.append(layer)
    alpha = np.clip(1.0 - (drawn[1] - drawn[0]).mean(axis=2) / 255.0, 0.0, 1.0).astype(np.float32)
    colour = drawn[0] / np.maximum(alpha, 1.0 / 255.0)[..., None]
    exposure = _exposure(rng)
    return _expose(back, exposure, rng), _expose(colour, exposure, rng), alpha
