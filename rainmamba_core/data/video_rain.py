"""Synthetic rain over real clean *video*: real motion, random rain looks, the camera after them.

Stills with simulated camera motion teach a model one kind of motion (a smooth pan over a flat
picture). Dense clean video has the real thing: parallax, objects moving on their own, shadows
sweeping, the ego-motion of a car. :class:`VideoRainDataset` samples clips from folders of
consecutive frames and renders rain on them on the fly:

* **time**: a random frame stride (1-8 by default: the node keeps only the newest frame, so the
  carried state must stay useful across skipped frames), time reversal, and occasional cuts (the
  clip jumps to another scene part-way, as after a bag loop or a camera switch);
* **space**: a random zoom (the crop covers a random fraction of the frame) and position, the same
  window for every frame (the motion inside it is the video's), horizontal flips;
* **rain**: a new look per clip (:func:`~rainmamba_core.data.rain_realism.random_rain`) or a fixed
  preset; a fraction of clips stay clean (input = target) so the model learns to leave clean
  frames alone;
* **orientation** (optional): with probability ``rot90_prob`` the clean clip is turned a quarter
  turn before the rain, so the scene's long straight lines (lane markings, kerbs, rails, the
  horizon) stand upright beside the falling streaks: upright thin structures that belong to the
  scene (mullions, poles, palm trunks, fountain jets) must come back unchanged, and dash-cam video
  alone has few of them;
* **sharpness** (optional): with probability ``sharpen_prob`` the clean clip gets an unsharp mask
  (amount drawn from ``sharpen``, radius 0.7-1.5 px) before the rain. The training videos are soft
  (dash-cam optics, JPEG, downscaling): their mean absolute Laplacian is about 12 grey levels
  against 21 on NTURain a2's clean frames, so dense, crisp scene texture is something the model
  has rarely had to keep;
* **exposure** (optional): with probability ``gamma_prob`` the clean clip's tone curve is bent by
  a gamma drawn log-uniformly from ``gamma`` before the rain (gamma < 1 brightens: the training
  videos average ~115 grey levels, NTURain's a2 ~180, and screen-blended rain looks different
  over a bright scene);
* **camera**: blur, sensor noise and JPEG after the rain, identical on input and target
  (:func:`~rainmamba_core.data.rain_realism.apply_camera`);
* **real rain** (optional): with probability ``real_prob`` the clip is *real* rainy video with
  a target made from the video itself (rain is transient, the scene is not:
  :mod:`~rainmamba_core.data.real_rain`), so the model meets a camera's own rain;
* **procedural scenes** (optional): with probability ``procedural_prob`` the clip is a new
  procedural scene (dead-leaves texture, facades with window grids and rails, poles, foliage;
  :mod:`~rainmamba_core.data.procedural`) with simulated camera motion: scene variety that seven
  videos and 75 stills do not have; ``procedural_bases`` gives them rain looks of their own,
  ``procedural_parallax`` a layer in front that moves farther than the scene;
* **stills** (optional): with probability ``still_prob`` the clip is a still with simulated camera
  motion instead (CamVid/CARLA/procedural scenes), for variety of scenes; with probability
  ``scene_streak_prob`` a still gets rain-like streaks painted into the scene itself (kept in the
  target: thin lines that move with the scene must survive; :func:`scene_streaks`).

Whole videos are held out by name (:data:`HELDOUT_VIDEOS`, at least one per source): the
``heldout`` split is never trained on. Items are dicts like the other datasets' (``lq``, ``gt``:
(T, 3, h, w) float32 in [0, 1]; ``key``). Evaluation items (``train=False``) depend only on
(dataset seed, index) and use whole frames resized to ``size``.

Dimension letters: T frames, H height, W width.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .clips import CameraMotion, builtin_scene, list_images, natural_key, read_image, resize_to, still_to_clip
from .datasets import BUILTIN_SEED0, DatasetError, _global_rng, to_tensor_clip
from .procedural import procedural_layers, procedural_scene
from .rain_realism import camera_stages, random_camera, random_rain
from .real_rain import RealRainClips
from .synthetic_rain import RainGenerator, RainParams

# Whole videos never trained on: one dash-cam clip and one of the Intel clips.
HELDOUT_VIDEOS = ('highway_pv_traffic', 'parking_lot_topdown')
PARALLAX = (1.3, 3.0)  # how many times more the foreground layer of a parallax clip moves
_VIDEO_TAG = 0xC11B5  # entropy tag of evaluation items, apart from the other datasets' tags


def find_videos(roots: Sequence[str | Path]) -> list[tuple[str, list[Path]]]:
    """Videos as (name, frame files): each root is a folder of frames or a folder of such folders."""
    videos: list[tuple[str, list[Path]]] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f'video root {root} is not a folder; give folders of consecutive frames '
                               '(e.g. ../shared/data/clean_video_udacity)')
        direct = list_images(root)
        if len(direct) >= 2:
            videos.append((root.name, direct))
            continue
        for sub in sorted((d for d in root.iterdir() if d.is_dir()), key=natural_key):
            files = list_images(sub)
            if len(files) >= 2:
                videos.append((sub.name, files))
    if not videos:
        raise DatasetError(f'no videos (folders of >= 2 frames) under {[str(r) for r in roots]}')
    return videos


class VideoRainDataset(Dataset):
    """Rainy/clean clips from clean videos (see the module doc).

    Args:
        video_roots: folders of videos (:func:`find_videos`).
        frames: T.
        crop: side of the square training crop; evaluation uses ``size`` instead.
        train: random draws (numpy's global RNG, seeded per sample by the trainer) vs
            deterministic per index.
        split: 'train' (videos not in ``heldout``), 'heldout' or 'all'.
        heldout: names of the held-out videos.
        stride: (lo, hi) frame stride drawn per training clip; evaluation uses ``eval_stride``.
        eval_stride: the stride of evaluation clips.
        reverse_prob, cut_prob: chance of time reversal / of a cut to another scene part-way.
        clean_prob: chance that a clip has no rain (input = target).
        presets: None draws a new rain look per clip; else preset names (training: one drawn
            per clip, with its knobs jittered; evaluation: item i uses preset i // videos).
        camera: run the camera pipeline (blur, noise, JPEG) after the rain.
        bases: weights of the base looks drawn when ``presets`` is None (default
            :data:`~rainmamba_core.data.rain_realism.RANDOM_BASES`).
        zoom: (lo, hi) fraction of the frame's short side the training crop covers.
        still_roots, still_prob, builtin_scenes: stills (and procedural scenes) with simulated
            camera motion, used for a ``still_prob`` share of training clips.
        length: items per pass (default: 64 per video in training; videos x presets otherwise).
        seed: dataset seed of evaluation items.
        size: (h, w) of evaluation clips (whole frames resized); default (180, 320).
        gamma, gamma_prob: (lo, hi) range of the per-clip exposure gamma (log-uniform) and the
            share of training clips that get one (0: none, and no random numbers are drawn, so
            older configs reproduce exactly).
        scene_streak_prob: share of still clips that get rain-like streaks painted into the scene
            itself, before the simulated camera motion (so they move with the scene, and input and
            target both keep them): thin lines that belong to the scene (railings, mullions, jets
            of water) must come back unchanged. 0: none, and no random numbers are drawn.
        rot90_prob: share of training clips turned a quarter turn (either way) before the rain:
            the scene's horizontal lines become upright ones next to the streaks. 0: none, and
            no random numbers are drawn.
        sharpen, sharpen_prob: (lo, hi) range of the unsharp-mask amount (uniform) and the share
            of training clips sharpened before the rain (0: none, and no random numbers are drawn).
        real_roots, real_prob, real_holdout: folders of *real* rainy frames (no ground truth) and
            the share of training clips drawn from them, with self-supervised targets
            (:class:`~rainmamba_core.data.real_rain.RealRainClips`; ``real_holdout`` frames at the
            end of each clip are never used). 0: none, and no random numbers are drawn.
        real_outside_weight: how much the loss counts a real clip's pixels *outside* its rain mask
            (1: as much as inside). There the target is only the input, which says "not clearly
            transient", not "no rain": faint streaks and haze are left in it. Below 1, items carry
            a ``weight`` (T, 1, h, w) map (ones on synthetic clips) and the trainer pulls each
            pixel towards its target by that share.
        procedural_prob: share of training clips made from a new procedural scene (texture,
            facades, thin structure: :func:`~rainmamba_core.data.procedural.procedural_scene`)
            with simulated camera motion, for scene variety beyond the footage. 0: none, and no
            random numbers are drawn.
        procedural_bases: the rain looks drawn for procedural clips (weights by preset name, as
            ``bases``); None: the same looks as every other clip. NTURain a2's looks (composite,
            nturain, sharp) over procedural facades are what moved a2 (model card, "Tried" (38)).
        procedural_zoom, procedural_roll: the procedural clips' camera also zooms (a rate drawn per
            clip up to this, relative scale change per frame) and rolls (up to this many degrees
            over the clip); 0: CameraMotion's defaults (0.01, 0.3). A pan of a flat scene leaves
            nothing but the rain in the aligned frame difference the detail head reads; real
            footage (forward motion, depth) leaves scene in it too (model card, "Tried" (39)).
        procedural_parallax: share of procedural clips with a layer in front (posts, poles,
            wires, fronds: :func:`~rainmamba_core.data.procedural.procedural_layers`) that moves
            1.3-3 times as far as the scene behind it (``PARALLAX``), as near things do: the
            aligned difference then holds scene at the layer's edges and is clean elsewhere, as on
            a2 (palms before a facade) and on footage. 0: none, and no random numbers are drawn.
        rain_oracle: evaluation items also carry ``'oracle'``: the input with every pixel the
            rain changed put back as the camera saw it without rain *before its JPEG step*
            (a perfect rain remover that does not know the codec; where the camera compresses,
            the target holds the codec's error around the rain, which no derainer can see). The
            same draws, so ``lq`` and ``gt`` are those of an item without it. Ignored in training.
    """

    def __init__(self, video_roots: Sequence[str | Path], frames: int = 4, crop: int | None = 128,
                 train: bool = True, split: str = 'train', heldout: Sequence[str] = HELDOUT_VIDEOS,
                 stride: Sequence[int] = (1, 8), eval_stride: int = 1, reverse_prob: float = 0.5,
                 cut_prob: float = 0.1, clean_prob: float = 0.1, presets: Sequence[str] | None = None,
                 camera: bool = True, zoom: Sequence[float] = (0.35, 1.0),
                 bases: dict[str, float] | None = None,
                 still_roots: Sequence[str | Path] = (), still_prob: float = 0.0,
                 builtin_scenes: int = 0, length: int | None = None, seed: int = 0,
                 size: Sequence[int] | None = None, cache: bool = True,
                 gamma: Sequence[float] = (0.4, 1.5), gamma_prob: float = 0.0,
                 scene_streak_prob: float = 0.0, rot90_prob: float = 0.0,
                 sharpen: Sequence[float] = (0.5, 1.5), sharpen_prob: float = 0.0,
                 real_roots: Sequence[str | Path] = (), real_prob: float = 0.0, real_holdout: int = 0,
                 real_outside_weight: float = 1.0, procedural_prob: float = 0.0,
                 procedural_bases: dict[str, float] | None = None, procedural_zoom: float = 0.0,
                 procedural_roll: float = 0.0, procedural_parallax: float = 0.0,
                 rain_oracle: bool = False) -> None:
        if isinstance(video_roots, (str, Path)):
            video_roots = [video_roots]
        videos = find_videos(video_roots)
        if split not in ('all', 'train', 'heldout'):
            raise DatasetError(f"split={split!r}: expected 'all', 'train' or 'heldout'")
        held = set(heldout)
        if split == 'train':
            videos = [v for v in videos if v[0] not in held]
        elif split == 'heldout':
            videos = [v for v in videos if v[0] in held]
        if not videos:
            raise DatasetError(f'split {split!r} has no videos (held out: {sorted(held)}); check the roots')
        lo, hi = int(stride[0]), int(stride[1])
        if not 1 <= lo <= hi:
            raise DatasetError(f'stride={tuple(stride)}: expected 1 <= lo <= hi')
        if frames < 1 or eval_stride < 1:
            raise DatasetError(f'frames={frames}, eval_stride={eval_stride}: expected >= 1')
        for name in list(presets or ()) + list(bases or ()) + list(procedural_bases or ()):
            RainParams.preset(name)  # fail early on a typo
        for label, table in (('bases', bases), ('procedural_bases', procedural_bases)):
            if table is not None and (min(table.values(), default=0) < 0 or sum(table.values()) <= 0):
                raise DatasetError(f'{label}={table}: expected non-negative weights with a positive sum')
        self.bases = dict(bases) if bases else None
        self.procedural_bases = dict(procedural_bases) if procedural_bases else None
        if not 0.0 <= gamma_prob <= 1.0 or len(gamma) != 2 or not 0 < float(gamma[0]) <= float(gamma[1]):
            raise DatasetError(f'gamma={tuple(gamma)}, gamma_prob={gamma_prob}: expected 0 < lo <= hi '
                               'and 0 <= gamma_prob <= 1')
        self.gamma, self.gamma_prob = (float(gamma[0]), float(gamma[1])), float(gamma_prob)
        if not 0.0 <= scene_streak_prob <= 1.0:
            raise DatasetError(f'scene_streak_prob={scene_streak_prob}: expected 0 <= scene_streak_prob <= 1')
        self.scene_streak_prob = float(scene_streak_prob)
        if not 0.0 <= rot90_prob <= 1.0:
            raise DatasetError(f'rot90_prob={rot90_prob}: expected 0 <= rot90_prob <= 1')
        self.rot90_prob = float(rot90_prob)
        if not 0.0 <= sharpen_prob <= 1.0 or len(sharpen) != 2 or not 0 <= float(sharpen[0]) <= float(sharpen[1]):
            raise DatasetError(f'sharpen={tuple(sharpen)}, sharpen_prob={sharpen_prob}: expected '
                               '0 <= lo <= hi and 0 <= sharpen_prob <= 1')
        self.sharpen, self.sharpen_prob = (float(sharpen[0]), float(sharpen[1])), float(sharpen_prob)
        if still_prob > 0 and not still_roots and not builtin_scenes:
            raise DatasetError('still_prob > 0 needs still_roots or builtin_scenes')
        if not 0.0 <= real_prob <= 1.0 or (real_prob > 0 and not real_roots):
            raise DatasetError(f'real_prob={real_prob}: expected 0 <= real_prob <= 1, and real_roots '
                               '(folders of real rainy frames) when it is above 0')
        self.real_prob = float(real_prob)
        if not 0.0 <= real_outside_weight <= 1.0:
            raise DatasetError(f'real_outside_weight={real_outside_weight}: expected 0 <= weight <= 1')
        self.real_outside_weight = float(real_outside_weight)
        if not 0.0 <= procedural_prob <= 1.0:
            raise DatasetError(f'procedural_prob={procedural_prob}: expected 0 <= procedural_prob <= 1')
        self.procedural_prob = float(procedural_prob)
        for label, value in (('procedural_zoom', procedural_zoom), ('procedural_roll', procedural_roll)):
            if not (np.isfinite(value) and value >= 0):
                raise DatasetError(f'{label}={value}: expected a finite number >= 0 (0: the usual motion)')
        self.procedural_zoom, self.procedural_roll = float(procedural_zoom), float(procedural_roll)
        if not 0.0 <= procedural_parallax <= 1.0:
            raise DatasetError(f'procedural_parallax={procedural_parallax}: expected 0 <= procedural_parallax <= 1')
        self.procedural_parallax = float(procedural_parallax)
        self.rain_oracle = bool(rain_oracle) and not train
        self.real = RealRainClips(real_roots, holdout=real_holdout) if train and real_prob > 0 else None
        self.videos, self.frames, self.crop, self.train = videos, frames, crop, train
        self.stride, self.eval_stride = (lo, hi), eval_stride
        self.reverse_prob, self.cut_prob, self.clean_prob = reverse_prob, cut_prob, clean_prob
        self.presets = list(presets) if presets else None
        self.camera, self.zoom, self.seed = camera, (float(zoom[0]), float(zoom[1])), seed
        self.size = tuple(size) if size else (180, 320)
        self.stills: list[Path] = []
        for root in still_roots:
            p = Path(root)
            self.stills += [p] if p.is_file() else list_images(p)
        self.builtin_scenes, self.still_prob = builtin_scenes, still_prob
        self.length = length or (len(videos) * 64 if train else len(videos) * max(len(self.presets or [1]), 1))
        self._weights = np.asarray([len(f) for _, f in videos], np.float64)
        self._weights /= self._weights.sum()
        self._cache: dict[Path, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    # ------------------------------------------------------------------ frames
    def _frame(self, path: Path) -> np.ndarray:
        if self._cache is not None and path in self._cache:
            return self._cache[path]
        img = read_image(path)
        if self._cache is not None:
            self._cache[path] = img
        return img

    def _indices(self, n: int, count: int, stride: int, rng: np.random.Generator) -> list[int]:
        stride = max(1, min(stride, (n - 1) // max(count - 1, 1)))
        span = stride * (count - 1)
        start = int(rng.integers(0, n - span)) if n > span else 0
        return [min(start + stride * k, n - 1) for k in range(count)]

    def _segment(self, count: int, rng: np.random.Generator, stride: int) -> tuple[str, list[np.ndarray]]:
        v = int(rng.choice(len(self.videos), p=self._weights)) if self.train else 0
        name, files = self.videos[v]
        idx = self._indices(len(files), count, stride, rng)
        if self.train and rng.random() < self.reverse_prob:
            idx = idx[::-1]
        return name, [self._frame(files[i]) for i in idx]

    def _window(self, frames: list[np.ndarray], side: int, rng: np.random.Generator) -> np.ndarray:
        """The same random square window of every frame, resized to side x side."""
        h, w = frames[0].shape[:2]
        frac = rng.uniform(*self.zoom)
        win = int(np.clip(round(min(h, w) * frac), min(side, min(h, w)) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - win + 1)), int(rng.integers(0, w - win + 1))
        interp = cv2.INTER_AREA if win > side else cv2.INTER_LINEAR
        return np.stack([cv2.resize(f[y:y + win, x:x + win], (side, side), interpolation=interp) for f in frames])

    def _still_clip(self, rng: np.random.Generator, side: int) -> tuple[str, np.ndarray]:
        k = int(rng.integers(len(self.stills) + self.builtin_scenes))
        if k < len(self.stills):
            img, name = read_image(self.stills[k]), self.stills[k].stem
        else:
            img, name = builtin_scene(360, 480, seed=BUILTIN_SEED0 + k - len(self.stills)), f'builtin{k}'
        if min(img.shape[:2]) > 480:
            f = 480 / min(img.shape[:2])
            img = resize_to(img, (round(img.shape[0] * f), round(img.shape[1] * f)))
        if self.scene_streak_prob > 0 and rng.random() < self.scene_streak_prob:
            img = scene_streaks(img, rng, self.bases)
        return name, self._camera_clip(img, rng, side, (0.35, 0.9))

    def _camera_motion(self, rng: np.random.Generator, zoom: float, roll: float) -> CameraMotion:
        # fast motion too: the real videos' strides cover the rest
        motion = CameraMotion(pan=float(rng.uniform(1, 12)), shake=float(rng.uniform(0.5, 3)))
        if zoom > 0:
            motion.zoom = float(rng.uniform(0.0, zoom))
        if roll > 0:
            motion.rotate = float(rng.uniform(0.0, roll))
        return motion

    def _camera_clip(self, img: np.ndarray, rng: np.random.Generator, side: int,
                     fov: tuple[float, float], zoom: float = 0.0, roll: float = 0.0) -> np.ndarray:
        """A clip of a virtual camera moving over one image (stills and procedural scenes); zoom
        and roll > 0 draw the clip's zoom rate and roll up to them (else CameraMotion's defaults)."""
        motion = self._camera_motion(rng, zoom, roll)
        return still_to_clip(img, self.frames, (side, side), rng, motion, fov=fov)

    def _procedural_clip(self, rng: np.random.Generator, side: int) -> np.ndarray:
        # the scene is drawn at about twice the crop and the camera sees 45-90 % of it, so it is
        # shrunk 0.9-1.8 times and its one-pixel lines and bars stay visible in the clip (a still
        # of 480 px is shrunk 1.1-2.9 times, and such lines fade into their surroundings)
        h, w, fov = 2 * side, int(2.5 * side), (0.45, 0.9)
        if not (self.procedural_parallax > 0 and rng.random() < self.procedural_parallax):
            return self._camera_clip(procedural_scene(h, w, rng), rng, side, fov, self.procedural_zoom,
                                     self.procedural_roll)
        back, front, alpha = procedural_layers(h, w, rng)
        motion = self._camera_motion(rng, self.procedural_zoom, self.procedural_roll)
        near = float(rng.uniform(*PARALLAX))
        # the nearer layer's pan, shake and zoom are larger by `near` (all scale as 1 / depth); the
        # roll is the camera's and the same for both; one generator state gives both layers the
        # same framing and path, so they differ only by the parallax
        front_motion = dataclasses.replace(motion, pan=motion.pan * near, shake=motion.shake * near,
                                           zoom=motion.zoom * near)
        cover = np.repeat(np.round(alpha * 255).astype(np.uint8)[..., None], 3, axis=2)
        front_clip = still_to_clip(front, self.frames, (side, side), copy.deepcopy(rng), front_motion, fov=fov)
        cover_clip = still_to_clip(cover, self.frames, (side, side), copy.deepcopy(rng), front_motion, fov=fov)
        back_clip = still_to_clip(back, self.frames, (side, side), rng, motion, fov=fov)
        a = cover_clip[..., :1].astype(np.float32) / 255.0
        return np.round(back_clip * (1.0 - a) + front_clip * a).astype(np.uint8)

    # ------------------------------------------------------------------ items
    def render(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Item ``index`` drawn from ``rng``."""
        t = self.frames
        preset = None
        if self.train and self.real is not None and rng.random() < self.real_prob:
            return self._real_item(index, rng)
        if self.train:
            side = int(self.crop or 128)
            if self.procedural_prob > 0 and rng.random() < self.procedural_prob:
                name, clean = 'procedural', self._procedural_clip(rng, side)
            elif self.still_prob > 0 and rng.random() < self.still_prob:
                name, clean = self._still_clip(rng, side)
            else:
                stride = int(rng.integers(self.stride[0], self.stride[1] + 1))
                name, frames = self._segment(t, rng, stride)
                clean = self._window(frames, side, rng)
                if t > 1 and rng.random() < self.cut_prob:  # a cut: the rest of the clip is elsewhere
                    k = int(rng.integers(1, t))
                    _, other = self._segment(t - k, rng, stride)
                    clean = np.concatenate([clean[:k], self._window(other, side, rng)])
                if rng.random() < 0.5:
                    clean = clean[:, :, ::-1]
            if self.presets:
                preset = self.presets[int(rng.integers(len(self.presets)))]
        else:
            name, files = self.videos[index % len(self.videos)]
            idx = self._indices(len(files), t, self.eval_stride, rng)
            h, w = self.size
            clean = np.stack([resize_to(self._frame(files[i]), (h, w)) for i in idx])
            if self.presets:
                preset = self.presets[(index // len(self.videos)) % len(self.presets)]
        if self.train and self.rot90_prob > 0 and rng.random() < self.rot90_prob:
            clean = np.rot90(clean, 1 if rng.random() < 0.5 else -1, axes=(1, 2))
        clean = np.ascontiguousarray(clean)
        if self.train and self.sharpen_prob > 0 and rng.random() < self.sharpen_prob:
            clean = unsharp_mask(clean, float(rng.uniform(*self.sharpen)), float(rng.uniform(0.7, 1.5)))
        if self.train and self.gamma_prob > 0 and rng.random() < self.gamma_prob:
            clean = apply_gamma(clean, float(np.exp(rng.uniform(*np.log(self.gamma)))))
        if self.train and rng.random() < self.clean_prob:
            look, lq = 'clean', clean.copy()
        else:
            bases = self.procedural_bases if name == 'procedural' and self.procedural_bases else self.bases
            params = random_rain(rng, base=preset, bases=bases)
            look = preset or 'random'
            lq = RainGenerator(params, int(rng.integers(2 ** 63 - 1))).render_clip(clean).rainy
        lq_raw, clean_raw = lq, clean
        if self.camera:
            (lq, clean), (lq_raw, clean_raw) = camera_stages([lq, clean], random_camera(rng), rng)
        item = {'lq': to_tensor_clip(lq), 'gt': to_tensor_clip(clean), 'key': f'{name}/{look}/{index}'}
        if self.rain_oracle:  # every pixel the rain changed given back as it was before the codec
            touched = (lq_raw != clean_raw).any(axis=-1, keepdims=True)
            item['oracle'] = to_tensor_clip(np.where(touched, clean_raw, lq))
        if self.real is not None and self.real_outside_weight < 1.0:  # one batch layout for every item
            item['weight'] = torch.ones(t, 1, *item['gt'].shape[-2:])
        return item

    def _real_item(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """A real rainy clip and its self-supervised target (:mod:`.real_rain`): the same window
        and flip for both; no synthetic rain and no camera pipeline (the camera already ran)."""
        name, rainy, target, mask = self.real.sample(self.frames, rng)
        mask3 = np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=-1)
        every = self._window(list(np.concatenate([rainy, target, mask3])), int(self.crop or 128), rng)
        if rng.random() < 0.5:
            every = every[:, :, ::-1]
        every = np.ascontiguousarray(every)
        t = self.frames
        item = {'lq': to_tensor_clip(every[:t]), 'gt': to_tensor_clip(every[t:2 * t]), 'key': f'{name}/real/{index}'}
        if self.real_outside_weight < 1.0:
            inside = to_tensor_clip(every[2 * t:])[:, :1]                       # (T, 1, h, w) in [0, 1]
            item['weight'] = self.real_outside_weight + (1.0 - self.real_outside_weight) * inside
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = _global_rng() if self.train else np.random.default_rng([_VIDEO_TAG, self.seed, index])
        return self.render(index, rng)


def scene_streaks(img: np.ndarray, rng: np.random.Generator, bases: dict[str, float] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 image with one frame of a random rain look's streaks painted in (no lens
    drops, haze or dimming): rain-like lines that are part of the scene."""
    params = dataclasses.replace(random_rain(rng, bases=bases), drops=0, veil=0.0, darken=0.0)
    return RainGenerator(params, int(rng.integers(2 ** 63 - 1))).render_clip(img[None]).rainy[0]


def unsharp_mask(clip: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """uint8 frames sharpened: x + amount * (x - gaussian(x, sigma)), rounded and clipped."""
    if clip.dtype != np.uint8:
        raise DatasetError(f'unsharp_mask: expected uint8 frames, got {clip.dtype}')
    if not (amount >= 0 and sigma > 0):
        raise DatasetError(f'unsharp_mask: amount={amount}, sigma={sigma}: expected amount >= 0, sigma > 0')
    out = np.empty_like(clip)
    for k, frame in enumerate(clip.astype(np.float32)):
        sharp = frame + amount * (frame - cv2.GaussianBlur(frame, (0, 0), sigma))
        out[k] = np.clip(np.round(sharp), 0, 255).astype(np.uint8)
    return out


def apply_gamma(clip: np.ndarray, gamma: float) -> np.ndarray:
    """uint8 frames through the tone curve 255 * (x / 255) ** gamma (< 1 brightens), by table."""
    if clip.dtype != np.uint8:
        raise DatasetError(f'apply_gamma: expected uint8 frames, got {clip.dtype}')
    if not gamma > 0:
        raise DatasetError(f'apply_gamma: gamma={gamma}: expected > 0')
    table = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return table[clip]


def build_video_dataset(clean_roots: Sequence[str], frames: int = 4, crop: int | None = 128,
                        train: bool = True, **options: Any) -> VideoRainDataset:
    """Trainer entry point (``data.kind: video``); options go to :class:`VideoRainDataset`.

    Options arrive from YAML, so lists are accepted where tuples are expected.
    """
    return VideoRainDataset(clean_roots, frames=frames, crop=crop, train=train, **options)
