"""Clean clips: frame folders, video files, still images with simulated camera motion, and a
built-in procedural scene (for machines without any data).

Every clip is a (T, H, W, 3) uint8 RGB array. Dimension letters: T frames, H height, W width.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rainmamba_core.errors import RainMambaError

log = logging.getLogger(__name__)

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')


class ClipError(RainMambaError, ValueError):
    """A clip source is missing, empty, unreadable or of an unexpected kind."""


def natural_key(path: Path | str) -> list:
    """Sort key that orders 'f2' before 'f10' (numbered frames)."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r'(\d+)', Path(path).name)]


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files of a folder in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ClipError(f'{folder}: not a folder; give a folder of images')
    it = folder.rglob('*') if recursive else folder.iterdir()
    return sorted((p for p in it if p.suffix.lower() in IMAGE_EXTS and p.is_file()), key=natural_key)


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an image file (grey and alpha converted)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ClipError(f'{path}: cannot read this image (missing or not an image OpenCV decodes)')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image (format from the suffix)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)):
        raise ClipError(f'{path}: OpenCV could not write the image (check the suffix and folder)')


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> bool:
    """Write (H, W, 3) uint8 RGB frames as an mp4v video; False when OpenCV cannot open the writer."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
    if not writer.isOpened():
        return False
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return True


def resize_to(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize (H, W, 3) to size=(h, w) (area filter when shrinking); None keeps it."""
    if size is None or tuple(img.shape[:2]) == tuple(size):
        return img
    h, w = size
    interp = cv2.INTER_AREA if h * w < img.shape[0] * img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def load_frame_folder(folder: str | Path, max_frames: int | None = None, start: int = 0,
                      size: tuple[int, int] | None = None) -> np.ndarray:
    """Consecutive frames from a folder of numbered images -> (T, H, W, 3) uint8."""
    files = list_images(folder)
    if not files:
        raise ClipError(f'{folder}: no images ({", ".join(IMAGE_EXTS)}) found')
    files = files[start:start + max_frames] if max_frames else files[start:]
    frames = [resize_to(read_image(f), size) for f in files]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ClipError(f'{folder}: frames differ in size {sorted(shapes)}; pass size=(h, w)')
    return np.stack(frames)


def load_video(path: str | Path, max_frames: int | None = None, start: int = 0,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames of a video file (cv2.VideoCapture) -> (T, H, W, 3) uint8."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ClipError(f'{path}: OpenCV cannot open this video (missing file or codec)')
    frames = []
    try:
        index = 0
        while max_frames is None or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index >= start:
                frames.append(resize_to(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise ClipError(f'{path}: no frames decoded (start={start})')
    return np.stack(frames)


@dataclass
class CameraMotion:
    """Smooth simulated camera motion over a still image (amounts per clip, output pixels)."""

    pan: float = 3.0        # mean pan speed (px / frame)
    zoom: float = 0.01      # max zoom rate (relative scale change / frame)
    shake: float = 1.5      # hand-held/vehicle shake amplitude (px)
    rotate: float = 0.3     # max roll (degrees over the clip)


def camera_path(frames: int, rng: np.random.Generator, motion: CameraMotion | None = None
                ) -> np.ndarray:
    """Per-frame (dx, dy, log_scale, angle_deg), smooth in time, starting at 0.

    Returns:
        (T, 4) float64.
    """
    m = motion or CameraMotion()
    t = np.arange(frames, dtype=np.float64)
    heading = rng.uniform(0, 2 * np.pi)
    speed = m.pan * rng.uniform(0.3, 1.3)
    dx = np.cos(heading) * speed * t
    dy = np.sin(heading) * speed * t * 0.5  # cameras pan more than they tilt
    # shake: a few low-frequency sinusoids with random phases (smooth, seeded)
    for _ in range(3):
        f = rng.uniform(0.05, 0.3)
        dx += m.shake / 3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        dy += m.shake / 3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    log_s = rng.uniform(-m.zoom, m.zoom) * t
    angle = rng.uniform(-m.rotate, m.rotate) * t / max(frames - 1, 1)
    return np.stack([dx - dx[0], dy - dy[0], log_s, angle], axis=1)


def still_to_clip(image: np.ndarray, frames: int, size: tuple[int, int] | None = None,
                  rng: np.random.Generator | int | None = 0, motion: CameraMotion | None = None,
                  fov: float | tuple[float, float] = 0.85) -> np.ndarray:
    """A clip of a virtual camera moving over a still image.

    Args:
        image: (H0, W0, 3) uint8.
        frames: T.
        size: output (h, w); None keeps the image size.
        rng: numpy Generator or seed.
        motion: pan/zoom/shake/roll amounts.
        fov: fraction of the largest window with the output's aspect ratio that the camera
            sees (smaller zooms in and leaves more room to move); a (lo, hi) pair draws it.

    Returns:
        (T, h, w, 3) uint8.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    h0, w0 = image.shape[:2]
    h, w = size or (h0, w0)
    frac = rng.uniform(*fov) if isinstance(fov, tuple) else fov
    path = camera_path(frames, rng, motion)
    # source pixels per output pixel so the window fits inside the image with margin to move
    base = min(w0 / w, h0 / h) * frac
    win_w, win_h = w * base, h * base
    cx = rng.uniform(win_w / 2, w0 - win_w / 2) if w0 > win_w else w0 / 2
    cy = rng.uniform(win_h / 2, h0 - win_h / 2) if h0 > win_h else h0 / 2
    # clamp the path so the window centre stays inside the image (border pixels are reflected)
    margin_x, margin_y = max(w0 - win_w, 0) / 2, max(h0 - win_h, 0) / 2
    out = np.empty((frames, h, w, 3), np.uint8)
    blur = base > 1.5  # shrinking a lot: pre-blur against aliasing
    src = cv2.GaussianBlur(image, (0, 0), 0.4 * base) if blur else image
    for t in range(frames):
        dx, dy, log_s, ang = path[t]
        s = base * np.exp(log_s)
        px = np.clip(cx + dx * base, w0 / 2 - margin_x, w0 / 2 + margin_x)
        py = np.clip(cy + dy * base, h0 / 2 - margin_y, h0 / 2 + margin_y)
        a = np.deg2rad(ang)
        # output pixel (u, v) -> source: centre + s * R(a) * (u - w/2, v - h/2)
        m = np.array([[s * np.cos(a), -s * np.sin(a), 0.0], [s * np.sin(a), s * np.cos(a), 0.0]])
        m[:, 2] = [px, py] - m[:, :2] @ np.array([w / 2, h / 2])
        out[t] = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)
    return out


def builtin_scene(h: int = 360, w: int = 480, seed: int = 0) -> np.ndarray:
    """A procedural street scene (sky, buildings with windows, trees, road, cars), no data needed.

    Returns:
        (h, w, 3) uint8 RGB.
    """
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    horizon = int(h * rng.uniform(0.38, 0.5))
    # sky: vertical gradient with soft clouds
    top, bottom = np.array(rng.uniform([90, 130, 190], [140, 170, 230])), np.array([215, 225, 235.0])
    g = np.linspace(0, 1, horizon)[:, None, None]
    img[:horizon] = top * (1 - g) + bottom * g
    clouds = cv2.GaussianBlur(rng.random((max(horizon // 8, 1), max(w // 8, 1))).astype(np.float32), (0, 0), 2)
    clouds = cv2.resize(clouds, (w, horizon))
    img[:horizon] += (np.clip(clouds - 0.5, 0, 1) * 120)[..., None]
    # ground and road (perspective trapezoid) with lane marks
    img[horizon:] = rng.uniform(70, 110, 3)
    vx = w * rng.uniform(0.35, 0.65)
    road = np.array([[vx - 4, horizon], [vx + 4, horizon], [w * 1.2, h], [-w * 0.2, h]], np.int32)
    cv2.fillPoly(img, [road], tuple(float(v) for v in rng.uniform(60, 90) * np.ones(3)))
    for k in range(8):
        f0, f1 = (k + 0.2) / 8, (k + 0.6) / 8
        y0, y1 = horizon + (h - horizon) * f0 ** 2, horizon + (h - horizon) * f1 ** 2
        cv2.line(img, (int(vx + (w / 2 - vx) * f0 ** 2 * 0.1), int(y0)),
                 (int(vx + (w / 2 - vx) * f1 ** 2 * 0.1), int(y1)), (230, 230, 210),
                 max(1, int(1 + 4 * f1)))
    # buildings along the horizon with window grids
    x = 0
    while x < w:
        bw = int(rng.uniform(0.08, 0.2) * w)
        bh = int(rng.uniform(0.15, 0.35) * h)
        colour = rng.uniform(90, 200, 3)
        y0 = max(horizon - bh, 0)
        img[y0:horizon, x:x + bw] = colour
        for wy in range(y0 + 4, horizon - 6, 10):
            for wx in range(x + 3, x + bw - 6, 9):
                if rng.random() < 0.8:
                    img[wy:wy + 5, wx:wx + 5] = colour * rng.uniform(0.3, 0.6)
        x += bw + int(rng.uniform(0, 0.05) * w)
    # trees: dark-green blobs on trunks
    for _ in range(int(rng.integers(2, 6))):
        tx, ty = int(rng.uniform(0, w)), int(horizon + rng.uniform(0, 0.1) * h)
        r = int(rng.uniform(0.03, 0.07) * w)
        cv2.line(img, (tx, ty), (tx, ty - 2 * r), (70, 50, 30), max(2, r // 5))
        cv2.circle(img, (tx, ty - 2 * r), r, tuple(float(v) for v in rng.uniform([30, 80, 30], [70, 140, 60])), -1)
    # cars: boxes with windows on the road
    for _ in range(int(rng.integers(1, 4))):
        f = rng.uniform(0.3, 0.9)
        cy = int(horizon + (h - horizon) * f)
        cw = int(w * 0.08 + w * 0.2 * f)
        cx = int(vx + rng.uniform(-0.6, 0.6) * cw * 2)
        colour = tuple(float(v) for v in rng.uniform(20, 230, 3))
        cv2.rectangle(img, (cx - cw // 2, cy - cw // 3), (cx + cw // 2, cy), colour, -1)
        cv2.rectangle(img, (cx - cw // 3, cy - cw // 3 - cw // 5), (cx + cw // 3, cy - cw // 3), (40, 50, 60), -1)
    # sensor-like texture so the scene is not flat
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def builtin_clip(frames: int = 8, h: int = 240, w: int = 320, seed: int = 0,
                 motion: CameraMotion | None = None) -> np.ndarray:
    """A moving-camera clip over a built-in scene -> (T, h, w, 3) uint8."""
    scene = builtin_scene(int(h * 1.5), int(w * 1.5), seed)
    return still_to_clip(scene, frames, (h, w), np.random.default_rng(seed + 1), motion)


def load_clip(source: str | Path, frames: int | None = None, size: tuple[int, int] | None = None,
              seed: int = 0, motion: CameraMotion | None = None) -> np.ndarray:
    """Any clean source -> (T, H, W, 3) uint8.

    Args:
        source: 'builtin', a folder of numbered frames, a video file, or a still image (then the
            camera moves over it).
        frames: number of frames (None: all of a folder/video; 8 for a still or builtin).
        size: output (h, w) or None.
        seed: seed of the camera motion (stills, builtin).
    """
    if str(source) == 'builtin':
        h, w = size or (240, 320)
        return builtin_clip(frames or 8, h, w, seed, motion)
    path = Path(source)
    if path.is_dir():
        return load_frame_folder(path, frames, size=size)
    if not path.exists():
        raise ClipError(f'{path}: no such file or folder; give a frame folder, a video, an image '
                        "or 'builtin'")
    if path.suffix.lower() in IMAGE_EXTS:
        return still_to_clip(read_image(path), frames or 8, size, seed, motion)
    return load_video(path, frames, size=size)
