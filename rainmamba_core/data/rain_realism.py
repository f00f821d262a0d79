"""Rain as real cameras record it: per-clip random rain looks and the camera pipeline after them.

A model trained on one rain look learns that look. Real rain differs from clip to clip (how
dense, how long and thin the streaks, at which angle, bright or dark against the scene, with or
without drops on the lens and haze), and it reaches the model through a camera that blurs, adds
sensor noise and compresses. So each training clip draws its own rain and camera:

* :func:`random_rain` draws a :class:`RainParams` from a base preset, jittering every knob
  (density, length, width, brightness, angle up to about +-35 degrees from vertical, depth layers,
  refraction, haze and its depth gradient, lens drops) from one seeded generator;
* :func:`random_camera` draws a :class:`CameraPipeline` (slight blur, sensor noise, JPEG quality
  60-95) and :func:`apply_camera` runs it over the rainy *and* the clean clip with the same blur,
  the same noise and the same quality, so the target is what the camera would have recorded
  without rain. The model is taught to remove rain, not noise or blocking: where there is no rain
  input and target are the same pixels.

Dimension letters: T frames, H height, W width.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .synthetic_rain import RainError, RainParams

# Base looks drawn by `random_rain` when no preset is asked for, with their weights: the
# compositing looks (NTURain-style long faint streaks, and the dense screen-blended 'composite'
# look measured on NTURain's a2) and light rain are common in recorded video; storms are rarer.
RANDOM_BASES: dict[str, float] = {'drizzle': 0.07, 'nturain': 0.17, 'composite': 0.20, 'light': 0.14,
                                  'sharp': 0.14, 'moderate': 0.14, 'heavy': 0.09, 'storm': 0.05}


@dataclass
class CameraPipeline:
    """What the camera does after the rain (applied identically to rainy and clean frames)."""

    blur: float = 0.0                 # Gaussian sigma (px) of optics / demosaicing softness; 0 = none
    noise: float = 0.0                # sensor noise std in grey levels (0-255), same draw on both
    jpeg_quality: int | None = None   # JPEG quality 1-100 of each frame; None = no compression

    def validate(self) -> None:
        if self.blur < 0 or self.noise < 0:
            raise RainError(f'CameraPipeline blur={self.blur}, noise={self.noise}: expected >= 0')
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise RainError(f'CameraPipeline.jpeg_quality={self.jpeg_quality}: expected 1-100 or None')


def random_rain(rng: np.random.Generator, base: str | None = None,
                bases: dict[str, float] | None = None) -> RainParams:
    """A rain look drawn per clip.

    Args:
        rng: the clip's generator (the same state gives the same look).
        base: a preset name to jitter; None draws one from ``bases`` (default
            :data:`RANDOM_BASES`).

    Returns:
        RainParams with every knob drawn: the preset's intensity scaled by random factors, a new
        angle (mostly near vertical, up to about 35 degrees), refraction in [0, 1], haze with a
        depth gradient, and lens drops on about half of the clips.
    """
    if base is None:
        table = bases or RANDOM_BASES
        names = list(table)
        weights = np.asarray([table[n] for n in names], np.float64)
        base = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    p = RainParams.preset(base)
    # angle: |angle| ~ 35 * u^1.5 (most rain falls near vertical), either side
    angle = float(35.0 * rng.uniform(0, 1) ** 1.5 * rng.choice([-1.0, 1.0]))
    drops = p.drops if rng.random() < 0.5 else 0
    veil = p.veil * rng.uniform(0.0, 1.5) if p.veil > 0 else (rng.uniform(0, 0.05) if rng.random() < 0.2 else 0.0)
    veil_gradient = rng.uniform(0.0, 1.5) if veil > 0 else 0.0
    veil_gradient = min(veil_gradient, 0.95 / max(veil, 1e-6) - 1)  # keep the haze below 1
    grey = rng.uniform(0.6, 0.85)
    out = dataclasses.replace(
        p,
        density=p.density * rng.uniform(0.5, 1.6),
        length=max(p.length * rng.uniform(0.6, 1.5), 2.0),
        width=max(p.width * rng.uniform(0.7, 1.3), 0.7),
        speed=p.speed * rng.uniform(0.7, 1.3),
        brightness=float(np.clip(p.brightness * rng.uniform(0.5, 1.3), 0.05, 1.0)),
        layers=int(np.clip(p.layers + rng.integers(-1, 2), 1, 4)),
        angle=angle, angle_jitter=0.0,
        refraction=float(rng.uniform(0, 1) if rng.random() < 0.8 else 0.0),
        streak_gain=float(rng.uniform(1.0, 1.6)),
        drops=int(drops),
        darken=p.darken * rng.uniform(0.0, 1.5),
        veil=float(veil), veil_gradient=float(max(veil_gradient, 0.0)),
        veil_colour=(grey, grey + rng.uniform(0, 0.03), grey + rng.uniform(0, 0.06)),
    )
    # streak profile (drawn last so the draws above keep their order): sharp looks stay mostly
    # sharp; a third of the soft looks get some hardness
    if p.profile > 0:
        out.profile = float(p.profile * rng.uniform(0.6, 1.0))
    elif rng.random() < 0.3:
        out.profile = float(rng.uniform(0.0, 1.0))
    out.validate()
    return out


def random_camera(rng: np.random.Generator, jpeg_prob: float = 0.7) -> CameraPipeline:
    """A camera drawn per clip: blur sigma 0-0.8 px (half of the clips none), noise 0-3 grey
    levels, JPEG quality 60-95 on ``jpeg_prob`` of the clips."""
    blur = float(rng.uniform(0.0, 0.8)) if rng.random() < 0.5 else 0.0
    noise = float(rng.uniform(0.0, 3.0)) if rng.random() < 0.6 else 0.0
    quality = int(rng.integers(60, 96)) if rng.random() < jpeg_prob else None
    return CameraPipeline(blur=blur, noise=noise, jpeg_quality=quality)


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of one (H, W, 3) uint8 RGB frame."""
    ok, buf = cv2.imencode('.jpg', frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RainError('JPEG encoding failed (OpenCV built without libjpeg?)')
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def apply_camera(clips: Sequence[np.ndarray], camera: CameraPipeline,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """Run the same camera over several aligned clips (rainy and clean).

    Args:
        clips: (T, H, W, 3) uint8 RGB arrays of one shape.
        camera: what to apply; the noise is drawn once from ``rng`` and added to every clip.

    Returns:
        New (T, H, W, 3) uint8 arrays, in the order given.
    """
    return camera_stages(clips, camera, rng)[0]


def camera_stages(clips: Sequence[np.ndarray], camera: CameraPipeline,
                  rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`apply_camera`, also giving each clip as it was before the JPEG step.

    The same draws from ``rng`` as :func:`apply_camera`. The frames before the codec say what a
    perfect rain remover could give back without knowing the codec (the generalisation suite's
    ``rain oracle``): where the camera compresses, the clean target holds the codec's error too.

    Returns:
        (after the whole camera, before its JPEG step): two lists of (T, H, W, 3) uint8 arrays
        in the order given; the same arrays twice when the camera does not compress.
    """
    camera.validate()
    shape = clips[0].shape
    if any(c.shape != shape for c in clips):
        raise RainError(f'apply_camera: clips differ in shape {[c.shape for c in clips]}; expected aligned clips')
    noise = rng.normal(0.0, camera.noise, shape).astype(np.float32) if camera.noise > 0 else None
    out, before = [], []
    for clip in clips:
        frames = clip.astype(np.float32)
        if camera.blur > 0:
            frames = np.stack([cv2.GaussianBlur(f, (0, 0), camera.blur) for f in frames])
        if noise is not None:
            frames += noise
        frames = np.ascontiguousarray(np.clip(frames + 0.5, 0, 255).astype(np.uint8))
        before.append(frames)
        if camera.jpeg_quality is not None:
            frames = np.ascontiguousarray(np.stack([_jpeg(f, camera.jpeg_quality) for f in frames]))
        out.append(frames)
    return out, before
