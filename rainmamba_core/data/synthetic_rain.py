"""Temporally coherent synthetic rain: streaks in depth layers and raindrops on the lens.

The rainy frame follows the paper's Eq. 8 (RainMamba, arXiv 2407.21773),

    RSD = (1 - M) * (B + S) + M * D,

with B the clean background, S the rain-streak layer, M the raindrop mask (soft, in [0, 1]) and
D the appearance of the drops. Two optional storm terms extend it: ``darken`` dims the scene
(overcast light) and ``veil`` adds the rain-accumulation haze of distant rain; with both at 0
(drizzle, light) the composition is exactly Eq. 8:

    RSD = (1 - M) * (B * (1 - darken) * (1 - veil) + veil * A + S) + M * D.

With ``refraction`` r > 0 the streaks show the scene they refract instead of plain white:
the ``+ S`` term becomes ``+ S * ((1 - r) + r * (E - B'))`` with B' the hazed background and E a
wide blur of it (see ``RainParams.refraction``), so streaks are bright over a dark road and can be
darker than a bright sky. ``veil_gradient`` makes the haze grow towards the top of the frame
(distance). Per-clip random looks and the camera after the rain are in ``rain_realism``.

Everything is drawn from one seeded ``numpy.random.Generator``: the same seed gives the same clip.

How the pieces are made (all vectorised; a 640x480 frame costs tens of milliseconds):

* **Streaks.** Each depth layer holds drops at fixed positions in a wrapped canvas that fall with
  a constant velocity (direction = the rain angle, speed shrinking with depth), so a streak moves
  consistently from frame to frame. A frame splats one point per drop (intensity varies per drop)
  and convolves the splat map with an oriented streak kernel: Gaussian across (width), tapered
  along (length). That kernel *is* the motion blur of the falling drop. Far layers are shorter,
  thinner, dimmer, slower and slightly defocused.
* **Lens drops.** Each drop is a blob with a wobbly outline (a few random harmonics of the
  radius). Inside, the lens shows a blurred, inverted and wider (demagnified) view of the
  background around it, brightened a little, with a darker rim and a small highlight. Drops
  persist over the clip and slide slowly (most barely move; a few run down); late drops fade in.

Dimension letters: T frames, H height, W width.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from rainmamba_core.errors import RainMambaError


class RainError(RainMambaError, ValueError):
    """Bad rain parameters or input frames."""


@dataclass
class RainParams:
    """Rain appearance. Lengths are in pixels of the rendered frame, speeds in pixels per frame."""

    # Streaks
    density: float = 1.0            # streaks per 1000 px^2 in the nearest layer (others scale up)
    length: float = 24.0            # streak length in the nearest layer (px)
    angle: float = 10.0             # degrees from vertical; positive leans right going down
    angle_jitter: float = 5.0       # per-clip random change of the angle (degrees, uniform +-)
    width: float = 1.6              # streak width (Gaussian FWHM, px) in the nearest layer
    profile: float = 0.0            # 0: soft (Gaussian across, brighter head); 1: sharp (flat
                                    # across with hard edges, even along: a fast drop in a short
                                    # exposure, as real cameras record it); between: a blend
    speed: float = 30.0             # fall speed of the nearest layer (px / frame)
    layers: int = 3                 # depth layers (near to far)
    brightness: float = 0.45        # peak added intensity of a near streak (0-1)
    depth_falloff: float = 0.6      # each layer deeper multiplies size/speed/brightness by this
    depth_density: float = 1.8      # each layer deeper multiplies the streak count by this
    # Lens drops
    drops: int = 0                  # raindrops on the lens (count at 640x480; scales with area)
    drop_radius: tuple[float, float] = (4.0, 14.0)   # radius range at 640x480 (px)
    drop_slide: float = 0.4         # mean sliding speed of moving drops (px / frame)
    drop_blur: float = 2.0          # blur (sigma, px) of the view inside a drop
    drop_zoom: float = 2.5          # drop shows a field this many times wider than itself
    drop_rim: float = 0.35          # darkening at the rim (0-1)
    drop_late: float = 0.2          # fraction of drops that appear during the clip
    # Atmosphere (0 = exact Eq. 8)
    darken: float = 0.0             # scene dimming (0-1)
    veil: float = 0.0               # haze amount (0-1)
    veil_colour: tuple[float, float, float] = (0.75, 0.77, 0.80)  # RGB of the haze
    veil_gradient: float = 0.0      # haze grows with depth: top rows get veil * (1 + g), bottom veil
    # Refraction (0 = the additive white streaks of Eq. 8). A real streak is a falling drop that
    # refracts a wide view of the scene: over a dark road it looks bright, over a bright sky it
    # can look darker than the sky behind it. With refraction r the streak layer S blends the
    # scene towards the drop's colour E (a wide blur of the frame mixed with its mean, times
    # `streak_gain`): rainy = B + S * ((1 - r) + r * (E - B)).
    refraction: float = 0.0
    streak_gain: float = 1.25       # brightness of the refracted view in a streak (E's factor)
    # Screen blending (0 = additive). Compositing software lays rendered rain over the footage in
    # 'screen' mode, rainy = 1 - (1 - B)(1 - S) = B + S (1 - B): a streak is plain over a dark
    # background and fades out over a bright one (NTURain's a2: streak pixels are 22 % of the
    # darkest backgrounds and 0.2 % of the brightest). Between 0 and 1 the two blend.
    screen: float = 0.0

    PRESETS = ('drizzle', 'light', 'moderate', 'heavy', 'storm', 'nturain', 'sharp', 'composite')

    @classmethod
    def preset(cls, name: str, **overrides: float) -> 'RainParams':
        """Intensity preset, from 'drizzle' to 'storm', with optional field overrides."""
        table: dict[str, dict] = {
            'drizzle': dict(density=0.25, length=10, width=1.0, speed=18, brightness=0.25,
                            layers=2, drops=0),
            'light': dict(density=0.6, length=16, width=1.2, speed=24, brightness=0.32,
                          layers=3, drops=4),
            'moderate': dict(density=1.2, length=24, width=1.6, speed=30, brightness=0.42,
                             layers=3, drops=10, veil=0.04),
            'heavy': dict(density=2.2, length=34, width=2.0, speed=38, brightness=0.5,
                          layers=3, drops=18, darken=0.06, veil=0.08),
            'storm': dict(density=3.5, length=46, width=2.4, speed=46, brightness=0.58,
                          layers=4, drops=28, angle=18, angle_jitter=10, darken=0.15,
                          veil=0.15, drop_slide=0.8),
            # the look of streaks rendered by compositing software (NTURain, 27-30 dB): sparse,
            # thin, long, semi-transparent, nearly vertical, no lens drops
            'nturain': dict(density=1.0, length=45, width=1.0, speed=40, brightness=0.55,
                            layers=2, depth_falloff=0.7, depth_density=1.5, angle=0,
                            angle_jitter=6, drops=0),
            # real camera rain at a short exposure (e.g. ../shared/data/real_rain_yard): sparse,
            # thin, bright, hard-edged streaks that jump far between frames, no lens drops
            'sharp': dict(density=0.45, length=24, width=1.6, speed=110, brightness=0.75,
                          layers=2, depth_falloff=0.6, profile=1.0, angle=0, angle_jitter=8,
                          drops=0),
            # NTURain's rain as measured on a2's residuals (rainy minus clean): many short, thin,
            # dim streaks screen-blended over the footage (plain over dark backgrounds, gone over
            # bright ones), moving ~15-20 px per frame, no lens drops
            'composite': dict(density=3.5, length=20, width=1.8, speed=18, brightness=0.6,
                              layers=3, depth_falloff=0.75, depth_density=1.4, screen=1.0, angle=0,
                              angle_jitter=5, drops=0),
        }
        if name not in table:
            raise RainError(f'unknown rain preset {name!r}; choose one of {", ".join(cls.PRESETS)}')
        params = cls(**table[name])
        return dataclasses.replace(params, **overrides) if overrides else params

    def validate(self) -> None:
        checks = [(self.density >= 0, 'density', '>= 0'), (self.length >= 1, 'length', '>= 1'),
                  (self.width > 0, 'width', '> 0'), (self.layers >= 1, 'layers', '>= 1'),
                  (0 <= self.profile <= 1, 'profile', 'in [0, 1]'),
                  (0 <= self.brightness <= 1, 'brightness', 'in [0, 1]'),
                  (0 < self.depth_falloff <= 1, 'depth_falloff', 'in (0, 1]'),
                  (self.drops >= 0, 'drops', '>= 0'),
                  (0 < self.drop_radius[0] <= self.drop_radius[1], 'drop_radius', '0 < min <= max'),
                  (0 <= self.darken < 1, 'darken', 'in [0, 1)'),
                  (0 <= self.veil < 1, 'veil', 'in [0, 1)'),
                  (self.veil_gradient >= 0, 'veil_gradient', '>= 0'),
                  (self.veil * (1 + self.veil_gradient) < 1, 'veil_gradient',
                   'small enough that veil * (1 + veil_gradient) < 1'),
                  (0 <= self.refraction <= 1, 'refraction', 'in [0, 1]'),
                  (self.streak_gain > 0, 'streak_gain', '> 0'),
                  (0 <= self.screen <= 1, 'screen', 'in [0, 1]')]
        for ok, name, expected in checks:
            if not ok:
                raise RainError(f'RainParams.{name}={getattr(self, name)!r}: expected {expected}')


@dataclass
class RainyClip:
    """A rendered clip and the layers it was composed from (Eq. 8).

    Attributes:
        rainy: (T, H, W, 3) uint8 RGB, the rainy frames.
        clean: (T, H, W, 3) uint8 RGB, the clean frames (B).
        streaks: (T, H, W) float32 in [0, 1], the streak layer S (added equally to R, G, B).
        mask: (T, H, W) float32 in [0, 1], the lens-drop mask M.
        drops: (T, H, W, 3) float32 in [0, 1], the drop appearance D (meaningful where M > 0).
        params: the parameters used (after the per-clip angle jitter).
    """

    rainy: np.ndarray
    clean: np.ndarray
    streaks: np.ndarray
    mask: np.ndarray
    drops: np.ndarray
    params: RainParams = field(default_factory=RainParams)


def streak_kernel(length: float, width: float, angle_deg: float, profile: float = 0.0) -> np.ndarray:
    """Oriented streak kernel with peak 1.

    ``profile`` 0 is the soft streak: Gaussian across (FWHM ``width``), brighter at the head, a
    linear ramp along. ``profile`` 1 is the sharp streak: flat across ``width`` pixels with
    anti-aliased hard edges and even along its length. Values between blend the two.

    Returns:
        (k, k) float32, k odd, the streak pointing down at `angle_deg` from vertical.
    """
    if not 0.0 <= profile <= 1.0:
        raise RainError(f'streak_kernel: profile={profile!r}: expected in [0, 1]')
    half = int(np.ceil(length / 2 + 2 * width)) + 1
    ys, xs = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    a = np.deg2rad(angle_deg)
    # unit vector of the fall direction in image coordinates (x right, y down)
    ux, uy = np.sin(a), np.cos(a)
    along = xs * ux + ys * uy
    across = -xs * uy + ys * ux
    soft = sharp = None
    if profile < 1.0:
        sigma = max(width, 0.5) / 2.355
        gauss = np.exp(-0.5 * (across / sigma) ** 2)
        # a drop is brighter at its head (leading end) than at its tail: a linear ramp
        t = np.clip(along / max(length / 2, 0.5), -1.0, 1.0)
        taper = np.where(np.abs(along) <= length / 2, 0.55 + 0.45 * t, 0.0)
        edge = np.clip((length / 2 + 1.0 - np.abs(along)), 0.0, 1.0)  # anti-aliased ends
        soft = (gauss * np.maximum(taper, 0) * edge).astype(np.float32)
    if profile > 0.0:
        # coverage of each pixel by a bar (area-like anti-aliasing at the edges)
        sharp = (np.clip(width / 2 + 0.5 - np.abs(across), 0.0, 1.0)
                 * np.clip(length / 2 + 0.5 - np.abs(along), 0.0, 1.0)).astype(np.float32)
    if sharp is None:
        return soft
    if soft is None:
        return sharp
    return ((1.0 - profile) * soft + profile * sharp).astype(np.float32)


class RainGenerator:
    """Render seeded, temporally coherent rain over clean clips.

    Args:
        params: rain appearance (see :class:`RainParams`, or ``RainParams.preset(name)``).
        seed: seed of the generator; each :meth:`render_clip` call draws a new rain from it, and
            a new generator with the same seed repeats the same sequence of clips.
    """

    def __init__(self, params: RainParams | None = None, seed: int | None = 0) -> None:
        self.params = params or RainParams()
        self.params.validate()
        self.rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- streaks
    def _streak_layers(self, frames: int, h: int, w: int, angle: float) -> np.ndarray:
        """S: (T, H, W) float32 in [0, 1]."""
        p, rng = self.params, self.rng
        out = np.zeros((frames, h, w), np.float32)
        a = np.deg2rad(angle)
        for layer in range(p.layers):
            scale = p.depth_falloff ** layer
            length = max(p.length * scale, 2.0)
            width = max(p.width * scale, 0.7)
            speed = p.speed * scale
            kern = streak_kernel(length, width, angle, p.profile)
            margin = kern.shape[0]
            ch, cw = h + 2 * margin, w + 2 * margin  # wrapped canvas so streaks re-enter
            count = int(round(p.density * p.depth_density ** layer * h * w / 1000.0 * rng.uniform(0.85, 1.15)))
            if count == 0:
                continue
            y0 = rng.uniform(0, ch, count)
            x0 = rng.uniform(0, cw, count)
            # per-drop speed and brightness spread: real drops differ in size
            v = speed * rng.uniform(0.8, 1.2, count)
            inten = p.brightness * scale ** 0.7 * rng.uniform(0.4, 1.0, count)
            for t in range(frames):
                ys = np.mod(y0 + v * t * np.cos(a), ch) - margin
                xs = np.mod(x0 + v * t * np.sin(a), cw) - margin
                iy = np.round(ys).astype(np.int64)
                ix = np.round(xs).astype(np.int64)
                keep = (iy >= -margin // 2) & (iy < h + margin // 2) & (ix >= -margin // 2) & (ix < w + margin // 2)
                # splat into a padded map so streaks whose centre is outside still show their ends
                pad = margin // 2 + 1
                splat = np.zeros((h + 2 * pad) * (w + 2 * pad), np.float32)
                flat = (iy[keep] + pad) * (w + 2 * pad) + (ix[keep] + pad)
                splat += np.bincount(flat, weights=inten[keep], minlength=splat.size).astype(np.float32)
                img = cv2.filter2D(splat.reshape(h + 2 * pad, w + 2 * pad), -1, kern,
                                   borderType=cv2.BORDER_CONSTANT)[pad:pad + h, pad:pad + w]
                if layer > 0:  # far rain is out of focus
                    img = cv2.GaussianBlur(img, (0, 0), 0.4 * layer)
                out[t] += img
        # soft saturation: overlapping streaks brighten but never exceed 1
        # slope 1 at 0 (a lone streak keeps its brightness), never above 1
        return (1.0 - np.exp(-out)).astype(np.float32)

    # ---------------------------------------------------------------- lens drops
    def _drop_layers(self, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """M: (T, H, W) float32 and D: (T, H, W, 3) float32 for backgrounds bg (T, H, W, 3) float."""
        p, rng = self.params, self.rng
        frames, h, w = bg.shape[:3]
        mask = np.zeros((frames, h, w), np.float32)
        drops = np.zeros((frames, h, w, 3), np.float32)
        area_scale = (h * w) / (640.0 * 480.0)
        n = int(rng.poisson(p.drops * area_scale)) if p.drops > 0 else 0
        if n == 0:
            return mask, drops
        size_scale = np.sqrt(max(area_scale, 1e-3)) ** 0.5  # drops shrink less than the frame
        for _ in range(n):
            r0 = rng.uniform(*p.drop_radius) * size_scale
            r0 = max(r0, 2.0)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            # most drops cling; some slide down (a little sideways)
            moving = rng.random() < 0.5
            vy = rng.exponential(p.drop_slide) * (1 + r0 / 10) if moving else 0.0
            vx = rng.normal(0, 0.15 * vy) if moving else 0.0
            birth = int(rng.integers(1, frames)) if (frames > 1 and rng.random() < p.drop_late) else 0
            harm = [(k, rng.uniform(0, 0.12), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]
            stretch = rng.uniform(0.8, 1.25)  # drops are taller or wider than round
            zoom = p.drop_zoom * rng.uniform(0.8, 1.2)
            gain = rng.uniform(1.0, 1.15)  # lenses gather light: drops look a bit brighter
            half = int(np.ceil(r0 * 1.6 * max(stretch, 1 / stretch))) + 2
            yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
            theta = np.arctan2(yy, xx)
            rad = np.hypot(xx * np.sqrt(stretch), yy / np.sqrt(stretch))
            edge = r0 * (1 + sum(a_ * np.cos(k * theta + ph) for k, a_, ph in harm))
            m_local = np.clip((edge - rad) / 1.2 + 0.5, 0, 1).astype(np.float32)  # soft 1-px edge
            rel = np.clip(rad / np.maximum(edge, 1e-3), 0, 1)
            rim = np.clip((rel - 0.65) / 0.35, 0, 1) ** 2  # darkening grows towards the edge
            highlight = np.exp(-((xx + 0.35 * r0) ** 2 + (yy + 0.4 * r0) ** 2) / (2 * (0.18 * r0) ** 2))
            for t in range(birth, frames):
                fade = min(1.0, (t - birth + 1) / 2.0) if birth else 1.0
                px, py = cx + vx * (t - birth), cy + vy * (t - birth)
                x0, y0 = int(round(px)) - half, int(round(py)) - half
                xa, ya = max(x0, 0), max(y0, 0)
                xb, yb = min(x0 + 2 * half + 1, w), min(y0 + 2 * half + 1, h)
                if xa >= xb or ya >= yb:
                    continue
                sl = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
                # refraction: the drop shows an inverted, wider view of the scene around it
                map_x = (px - (xx[sl] * zoom)).astype(np.float32)
                map_y = (py - 0.5 * r0 - (yy[sl] * zoom)).astype(np.float32)
                view = cv2.remap(bg[t], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                if p.drop_blur > 0:
                    view = cv2.GaussianBlur(view, (0, 0), p.drop_blur)
                view = view * gain * (1 - p.drop_rim * rim[sl])[..., None] + 0.35 * highlight[sl][..., None]
                m = m_local[sl] * fade
                cur = mask[t, ya:yb, xa:xb]
                # overlapping drops: the newer one lies on top
                drops[t, ya:yb, xa:xb] = drops[t, ya:yb, xa:xb] * (1 - m)[..., None] + view * m[..., None]
                mask[t, ya:yb, xa:xb] = cur + m * (1 - cur)
        # D is the colour of the drop where present; normalise the premultiplied accumulation
        np.divide(drops, mask[..., None], out=drops, where=mask[..., None] > 1e-6)
        np.clip(drops, 0, 1, out=drops)
        return mask, drops

    def _refracted_view(self, scene: np.ndarray) -> np.ndarray:
        """E: (T, H, W, 3) float32, what a streak shows: a wide blur of the scene (a drop sees a
        wide field) mixed with the frame's mean colour, times ``streak_gain``, at most 1."""
        frames, h, w = scene.shape[:3]
        sigma = max(h, w) / 16.0
        out = np.empty_like(scene)
        for t in range(frames):
            small = cv2.resize(scene[t], (max(w // 8, 1), max(h // 8, 1)), interpolation=cv2.INTER_AREA)
            wide = cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / 8), (w, h), interpolation=cv2.INTER_LINEAR)
            out[t] = 0.5 * wide.reshape(h, w, 3) + 0.5 * scene[t].mean(axis=(0, 1))
        out *= self.params.streak_gain
        return np.minimum(out, 1.0, out=out)

    # ---------------------------------------------------------------- clip
    def render_clip(self, clean: np.ndarray) -> RainyClip:
        """Add rain to a clean clip.

        Args:
            clean: (T, H, W, 3) uint8 RGB (a single (H, W, 3) frame is treated as T=1).

        Returns:
            The rainy clip with its layers (see :class:`RainyClip`).
        """
        clean = np.asarray(clean)
        if clean.ndim == 3:
            clean = clean[None]
        if clean.ndim != 4 or clean.shape[-1] != 3 or clean.dtype != np.uint8:
            raise RainError(f'render_clip: clean frames must be (T, H, W, 3) uint8 RGB, got '
                            f'{clean.shape} {clean.dtype}; convert with np.asarray(..., np.uint8)')
        p = self.params
        angle = p.angle + self.rng.uniform(-p.angle_jitter, p.angle_jitter)
        frames, h, w = clean.shape[:3]
        bg = clean.astype(np.float32) / 255.0
        streaks = self._streak_layers(frames, h, w, angle)
        mask, drops = self._drop_layers(bg)
        # in place on float32 buffers: this runs per training sample
        rainy = bg.copy()
        if p.darken > 0 or p.veil > 0:
            veil = np.float32(p.veil)
            if p.veil_gradient > 0:  # (H, 1, 1): distant rows (top) are hazier
                veil = (p.veil * (1 + p.veil_gradient * np.linspace(1, 0, h, dtype=np.float32)))[:, None, None]
            rainy *= (1 - p.darken) * (1 - veil)
            rainy += np.asarray(p.veil_colour, np.float32) * veil
        # the streak's weight per pixel: 1 (additive), 1 - B (screen), or their blend, and with
        # refraction the scene's own view E - B for a share r
        weight = 1.0 - p.screen * rainy if p.screen > 0 else 1.0
        if p.refraction > 0:
            rainy += streaks[..., None] * ((1 - p.refraction) * weight
                                           + p.refraction * (self._refracted_view(rainy) - rainy))
        elif p.screen > 0:
            rainy += streaks[..., None] * weight
        else:
            rainy += streaks[..., None]
        if mask.any():
            m = mask[..., None]
            rainy -= m * (rainy - drops)  # (1 - M)(B + S) + M D
        rainy *= 255.0
        rainy += 0.5
        np.clip(rainy, 0, 255, out=rainy)
        rainy_u8 = rainy.astype(np.uint8)
        return RainyClip(rainy=rainy_u8, clean=clean, streaks=streaks.astype(np.float32),
                         mask=mask, drops=drops, params=dataclasses.replace(p, angle=angle))


def add_rain(clean: np.ndarray, preset: str = 'moderate', seed: int | None = 0) -> RainyClip:
    """One-call helper: ``RainGenerator(RainParams.preset(preset), seed).render_clip(clean)``."""
    return RainGenerator(RainParams.preset(preset), seed).render_clip(clean)
