"""Torch datasets of rainy/clean clips: the authors' paired folder layouts and on-the-fly
synthetic rain over clean stills.

Items are dicts of float32 tensors in [0, 1] (T frames, crop h x w):

* ``lq``: (T, 3, h, w) rainy input, ``gt``: (T, 3, h, w) clean target;
* synthetic only: ``mask``: (T, 1, h, w) lens-drop mask M and ``streaks``: (T, 1, h, w) streak
  layer S of Eq. 8;
* metadata (non-tensor, dropped by the trainer's collate): ``key`` (sequence or scene name and
  start frame).

Randomness. In training mode (``train=True``) crops, flips, camera motion and rain are drawn
from numpy's global RNG, which the trainer seeds per sample (``train.sampling.SeededDataset``),
so a run is reproducible from its seed. In evaluation mode (``train=False``) an item depends only
on (dataset seed, index): paired items are fixed windows with a centre crop; synthetic items are
rendered from ``numpy.random.default_rng([tag, seed, index])`` with a tag that differs between the
held-out and training splits, so held-out rain is never a training draw.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rainmamba_core.errors import RainMambaError

from .clips import CameraMotion, builtin_scene, list_images, natural_key, read_image, resize_to, still_to_clip
from .synthetic_rain import RainGenerator, RainParams

log = logging.getLogger(__name__)

_HELDOUT_TAG = 0x4E1D07  # entropy tags of the two synthetic splits
_TRAIN_TAG = 0x7A1E5
# seeds of the procedural training scenes: far from the demo's (7) and `rainmamba eval --data
# synthetic`'s built-in clips (1,000,003 * (seed + 1) + i)
BUILTIN_SEED0 = 500_000


class DatasetError(RainMambaError, ValueError):
    """A dataset folder is missing, empty or inconsistent (lq and gt do not pair up)."""


# --------------------------------------------------------------------------------------------
# Augmentation shared by lq, gt and masks


def to_tensor_clip(clip: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) uint8 or float [0,1] -> (T, C, H, W) float32 in [0, 1]."""
    arr = clip.astype(np.float32) / 255.0 if clip.dtype == np.uint8 else clip.astype(np.float32)
    if arr.ndim == 3:
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def augment_same(arrays: list[np.ndarray], rng: np.random.Generator | None, crop: int | None,
                 flips: bool = True, transpose: bool = True) -> list[np.ndarray]:
    """Crop, flip and transpose several (T, H, W, ...) arrays identically.

    Args:
        arrays: clips with equal T, H, W.
        rng: random source; None -> centre crop and no flips (evaluation).
        crop: square crop side, or None for the full frame.
        flips: random horizontal and vertical flips (p = 0.5 each, as the authors).
        transpose: random H<->W transpose (p = 0.5, as the authors' RandomTransposeHW).
    """
    h, w = arrays[0].shape[1:3]
    if crop is not None:
        if h < crop or w < crop:
            raise DatasetError(f'crop {crop} is larger than the frames ({h}x{w}); lower data.crop')
        if rng is None:
            y, x = (h - crop) // 2, (w - crop) // 2
        else:
            y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        arrays = [a[:, y:y + crop, x:x + crop] for a in arrays]
    if rng is not None:
        if flips and rng.random() < 0.5:
            arrays = [a[:, :, ::-1] for a in arrays]
        if flips and rng.random() < 0.5:
            arrays = [a[:, ::-1] for a in arrays]
        if transpose and rng.random() < 0.5:
            arrays = [a.swapaxes(1, 2) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


def _global_rng() -> np.random.Generator:
    """A Generator drawn from numpy's global RNG (seeded per sample by the trainer)."""
    return np.random.default_rng(np.random.randint(0, 2 ** 63 - 1, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Paired folders (authors' layouts)


def find_sequences(lq_root: str | Path, gt_root: str | Path) -> list[tuple[str, list[Path], list[Path]]]:
    """Pair sequences of numbered frames: (name, lq files, gt files).

    Layouts: ``lq_root/<seq>/<frame>.png`` with ``gt_root/<seq>/...`` (the authors' VRDS,
    LWDDS, RainSynAll100 ...), or a single sequence with frames directly in each root
    (e.g. NTURain's ``a2_Rain`` / ``a2_GT``). Frames pair by file stem, else by sorted position
    when both folders hold the same number of frames.
    """
    lq_root, gt_root = Path(lq_root), Path(gt_root)
    for root, name in ((lq_root, 'lq'), (gt_root, 'gt')):
        if not root.is_dir():
            raise DatasetError(f'{name} root {root} is not a folder; point it at the {name} frames')
    direct = list_images(lq_root)
    if direct:
        pairs = [(lq_root.name, lq_root, gt_root)]
    else:
        subs = sorted((d for d in lq_root.iterdir() if d.is_dir()), key=natural_key)
        pairs = [(d.name, d, gt_root / d.name) for d in subs]
    out = []
    for name, lq_dir, gt_dir in pairs:
        if not gt_dir.is_dir():
            raise DatasetError(f'sequence {name}: {gt_dir} is missing (every lq sequence needs a gt '
                               'folder of the same name)')
        lq, gt = list_images(lq_dir), list_images(gt_dir)
        if not lq:
            continue
        gt_by_stem = {p.stem: p for p in gt}
        if all(p.stem in gt_by_stem for p in lq):
            gt = [gt_by_stem[p.stem] for p in lq]
        elif len(lq) != len(gt):
            raise DatasetError(f'sequence {name}: {len(lq)} lq frames but {len(gt)} gt frames and '
                               'names differ; frames must pair by name or by count')
        out.append((name, lq, gt))
    if not out:
        raise DatasetError(f'{lq_root}: no sequences of images found (expected <seq>/<frames> or frames)')
    return out


class PairedFolderDataset(Dataset):
    """Rainy/clean clip pairs from sequence folders.

    Args:
        lq_root, gt_root: see :func:`find_sequences`.
        frames: T frames per clip; None or 0 = whole sequences (evaluation).
        crop: square crop side (None: full frames).
        train: random start, crop, flips and transpose (the authors' pipeline); else fixed
            consecutive windows of ``frames`` with a centre crop.
        repeat: times each sequence appears per pass in training (the authors' RepeatDataset).
        flips, transpose: enable those augmentations in training.
        size: resize frames to (h, w) on load (None keeps them).
    """

    def __init__(self, lq_root: str | Path, gt_root: str | Path, frames: int | None = 5,
                 crop: int | None = 256, train: bool = True, repeat: int = 1, flips: bool = True,
                 transpose: bool = True, size: tuple[int, int] | None = None) -> None:
        self.sequences = find_sequences(lq_root, gt_root)
        self.frames, self.crop, self.train = frames or None, crop, train
        self.flips, self.transpose, self.size = flips, transpose, size
        self.items: list[tuple[int, int]] = []  # (sequence, start)
        for s, (name, lq, _) in enumerate(self.sequences):
            n = len(lq)
            if self.frames and n < self.frames:
                log.warning('sequence %s has %d frames < %d: skipped', name, n, self.frames)
                continue
            if train:
                self.items += [(s, -1)] * repeat
            elif self.frames:
                self.items += [(s, i) for i in range(0, n - self.frames + 1, self.frames)]
            else:
                self.items.append((s, 0))
        if not self.items:
            raise DatasetError(f'{lq_root}: no sequence has {self.frames} frames')

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s, start = self.items[index]
        name, lq_files, gt_files = self.sequences[s]
        rng = _global_rng() if self.train else None
        n = len(lq_files)
        count = self.frames or n
        if start < 0:
            start = int(rng.integers(0, n - count + 1))  # type: ignore[union-attr]
        sel = slice(start, start + count)
        lq = np.stack([resize_to(read_image(p), self.size) for p in lq_files[sel]])
        gt = np.stack([resize_to(read_image(p), self.size) for p in gt_files[sel]])
        if lq.shape != gt.shape:
            raise DatasetError(f'sequence {name}: lq frames {lq.shape} and gt frames {gt.shape} differ')
        lq, gt = augment_same([lq, gt], rng, self.crop, self.flips, self.transpose)
        return {'lq': to_tensor_clip(lq), 'gt': to_tensor_clip(gt), 'key': f'{name}/{start}'}


def build_paired_dataset(lq_root: str, gt_root: str, frames: int = 5, crop: int | None = 256,
                         train: bool = True, **options: Any) -> PairedFolderDataset:
    """Trainer entry point (``data.kind: paired``); options go to :class:`PairedFolderDataset`."""
    return PairedFolderDataset(lq_root, gt_root, frames=frames, crop=crop, train=train, **options)


# --------------------------------------------------------------------------------------------
# Held-out split


def scene_group(path: str | Path, by: str = 'file') -> str:
    """Name a scene: the file stem ('file') or the stem without its trailing frame number
    ('sequence': CamVid's ``0001TP_008550`` -> ``0001TP``)."""
    stem = Path(path).stem
    if by == 'file':
        return stem
    if by == 'sequence':
        return stem.rstrip('0123456789').rstrip('_-f') or stem
    raise DatasetError(f"scene grouping {by!r}: expected 'file' or 'sequence'")


def heldout_split(files: Sequence[str | Path], fraction: float = 0.2, by: str = 'file',
                  salt: str = 'rainmamba-heldout-v1') -> tuple[list[Path], list[Path]]:
    """Split scene files into (train, held-out) by a stable hash of their scene name.

    The decision for a file depends only on its name (not on the folder contents or machine),
    so adding files never moves an old scene across the split. With at least two groups, each
    side gets at least one.
    """
    files = [Path(f) for f in files]
    groups = sorted({scene_group(f, by) for f in files})

    def score(g: str) -> float:
        return int.from_bytes(hashlib.sha1(f'{salt}:{g}'.encode()).digest()[:8], 'big') / 2 ** 64

    held = {g for g in groups if score(g) < fraction}
    if len(groups) >= 2 and fraction > 0:
        ranked = sorted(groups, key=score)
        if not held:
            held = {ranked[0]}
        if len(held) == len(groups):
            held.discard(ranked[-1])
    train = [f for f in files if scene_group(f, by) not in held]
    heldout = [f for f in files if scene_group(f, by) in held]
    return train, heldout


# --------------------------------------------------------------------------------------------
# Synthetic rain over clean stills


class SyntheticRainDataset(Dataset):
    """Clips made on the fly: a virtual camera moves over a clean still, rain is rendered on it.

    Args:
        clean_roots: folders of clean stills (each image is a scene), e.g. CamVid images and
            CARLA clean frames; image files are accepted too.
        frames: T.
        crop: side of the square clip (the camera renders it directly); None -> ``size``.
        train: random draws from numpy's global RNG (see module doc) vs deterministic per index.
        presets: rain presets drawn uniformly per clip.
        split: 'all', 'train' or 'heldout' scenes (see :func:`heldout_split`).
        heldout_fraction, heldout_by: the split's parameters.
        length: items per pass (default: 64 per scene in training, 1 per scene otherwise).
        seed: the dataset seed of evaluation items.
        size: (h, w) of evaluation clips when ``crop`` is None (default (256, 256)).
        short_side: stills are resized on load so their short side is at most this (CARLA's
            2048x1024 frames come down to CamVid's scale).
        fov: the camera's field of view as a fraction of the still (lo, hi).
        motion: camera motion amounts.
        builtin_scenes: this many procedural street scenes (:func:`builtin_scene`, seeds
            ``BUILTIN_SEED0 + k``) join the clean stills; they belong to the training side of the
            split (the 'heldout' split never contains them), so held-out numbers stay on real
            footage. They cover the flat, saturated look of the built-in demo clip.
    """

    def __init__(self, clean_roots: Sequence[str | Path], frames: int = 5, crop: int | None = 256,
                 train: bool = True, presets: Sequence[str] = ('light', 'moderate', 'heavy', 'storm'),
                 split: str = 'all', heldout_fraction: float = 0.2, heldout_by: str = 'file',
                 length: int | None = None, seed: int = 0, size: tuple[int, int] | None = None,
                 short_side: int | None = 480, fov: tuple[float, float] = (0.35, 0.9),
                 motion: CameraMotion | dict | None = None, cache: bool = True,
                 builtin_scenes: int = 0) -> None:
        files: list[Path] = []
        for root in [clean_roots] if isinstance(clean_roots, (str, Path)) else clean_roots:
            p = Path(root)
            files += [p] if p.is_file() else list_images(p)
        if not files and not builtin_scenes:
            raise DatasetError(f'no clean images under {list(clean_roots)}; give folders of stills')
        if builtin_scenes < 0:
            raise DatasetError(f'builtin_scenes={builtin_scenes}: expected a count >= 0')
        if split not in ('all', 'train', 'heldout'):
            raise DatasetError(f"split={split!r}: expected 'all', 'train' or 'heldout'")
        if split != 'all' and files:
            tr, ho = heldout_split(files, heldout_fraction, heldout_by)
            files = tr if split == 'train' else ho
            if not files:
                raise DatasetError(f'split {split!r} of {len(tr) + len(ho)} scenes is empty; '
                                   'add scenes or change heldout_fraction')
        for name in presets:
            RainParams.preset(name)  # fail early on a typo
        self.builtin_seeds = [] if split == 'heldout' else [BUILTIN_SEED0 + k for k in range(builtin_scenes)]
        if not files and not self.builtin_seeds:
            raise DatasetError(f'split {split!r} has no scenes: the held-out split never holds built-in scenes')
        self.files, self.frames, self.crop, self.train = files, frames, crop, train
        self.presets, self.seed, self.split = list(presets), seed, split
        self.size = (crop, crop) if crop else tuple(size or (256, 256))
        self.short_side, self.fov = short_side, tuple(fov)
        self.motion = CameraMotion(**motion) if isinstance(motion, dict) else motion
        self.length = length or self.num_scenes * (64 if train else 1)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    @property
    def num_scenes(self) -> int:
        return len(self.files) + len(self.builtin_seeds)

    def scene_name(self, i: int) -> str:
        return self.files[i].stem if i < len(self.files) else f'builtin{self.builtin_seeds[i - len(self.files)]}'

    def scene(self, i: int) -> np.ndarray:
        """The still of scene i, resized to ``short_side`` -> (H, W, 3) uint8."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        if i >= len(self.files):
            img = builtin_scene(360, 480, seed=self.builtin_seeds[i - len(self.files)])
        else:
            img = read_image(self.files[i])
        if self.short_side and min(img.shape[:2]) > self.short_side:
            f = self.short_side / min(img.shape[:2])
            img = resize_to(img, (round(img.shape[0] * f), round(img.shape[1] * f)))
        if self._cache is not None:
            self._cache[i] = img
        return img

    def render(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Render item `index` with the given random source."""
        scene_index = index % self.num_scenes
        still = self.scene(scene_index)
        clean = still_to_clip(still, self.frames, self.size, rng, self.motion, fov=self.fov)  # type: ignore[arg-type]
        preset = self.presets[int(rng.integers(len(self.presets)))]
        rain = RainGenerator(RainParams.preset(preset), int(rng.integers(2 ** 63 - 1))).render_clip(clean)
        arrays = [rain.rainy, rain.clean, rain.mask[..., None], rain.streaks[..., None]]
        if self.train:  # the camera already chose the crop; flips/transposes as for paired data
            arrays = augment_same(arrays, rng, None)
        lq, gt, mask, streaks = arrays
        return {'lq': to_tensor_clip(lq), 'gt': to_tensor_clip(gt), 'mask': to_tensor_clip(mask),
                'streaks': to_tensor_clip(streaks),
                'key': f'{self.scene_name(scene_index)}/{preset}/{index}'}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.train:
            rng = _global_rng()
        else:
            tag = _HELDOUT_TAG if self.split == 'heldout' else _TRAIN_TAG
            rng = np.random.default_rng([tag, self.seed, index])
        return self.render(index, rng)


def build_synthetic_dataset(clean_roots: Sequence[str], frames: int = 5, crop: int | None = 256,
                            train: bool = True, **options: Any) -> SyntheticRainDataset:
    """Trainer entry point (``data.kind: synthetic``); options go to :class:`SyntheticRainDataset`.

    Options arrive from YAML, so lists are accepted where tuples are expected.
    """
    for key in ('size', 'fov'):
        if key in options and options[key] is not None:
            options[key] = tuple(options[key])
    return SyntheticRainDataset(clean_roots, frames=frames, crop=crop, train=train, **options)
