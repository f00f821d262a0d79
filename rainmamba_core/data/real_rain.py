"""Real rainy video without ground truth: targets from the video itself (self-supervised).

Rain is temporally random and the scene is not: a streak crosses a scene point in one frame and
is gone in the next, while a kerb or a railing is there in every frame, only moved by the camera.
So the neighbours of frame t, warped onto it, show the scene where frame t shows rain.
:func:`transient_rain_target` turns that into a training target for a real rainy clip:

1. **distinct frames** only (:func:`distinct_frames`): recorded and re-encoded video often repeats
   frames (``real_rain_yard`` repeats 21 of its 50 in a row), and a repeated frame repeats its
   rain, so it would count as scene;
2. each of up to ``2 * neighbours`` distinct neighbours is **warped onto frame t by dense optical
   flow** (OpenCV DIS on median-filtered grey frames, so the flow follows the scene rather than the
   streaks); a neighbour whose warped frame still differs from frame t by more than
   ``max_misfit`` grey levels (median over its valid pixels: a cut, or flow that failed) is left out,
   and so is a neighbour's pixel where the streak-free (median-filtered) images still differ by
   ``local_misfit`` over a 9x9 window (flow that is locally wrong: occlusions, and the scene next
   to an overlay that stays on the screen);
3. a pixel is **rain** where frame t is brighter than all but at most one of the usable warped
   neighbours by more than ``threshold`` grey levels (at least two must see it), compared with the
   brightest pixel of each neighbour within one pixel (the flow misplaces a thin scene line by a
   pixel or so, and a line that is there in the neighbours is scene), *and* brighter
   than the same pixel of the unwarped neighbours too: a burned-in overlay (a watermark, a
   timestamp) stays put on the screen while the scene moves under it, so it is transient in scene
   coordinates but not on the screen, and must be kept. The mask is grown by one pixel for the
   streaks' soft fringes;
4. the **target** is frame t outside the mask and, inside it, the per-channel median of the
   warped neighbours where that is darker than frame t (rain brightens; the target never adds
   light).

Everything else in the frame is the input itself, so the target cannot teach blur or smear: at
worst it leaves some rain in place (faint streaks under ``threshold``; streaks that fall in the
same place in most neighbours). :class:`RealRainClips` holds the targets of folders of real rainy
frames and samples training clips from them; `VideoRainDataset` mixes them in with
``real_roots`` / ``real_prob`` / ``real_outside_weight`` (`docs/training.md`, "Your camera's own
rain, without ground truth"). The repeated frames of item 1 are also skipped as neighbours
(a clip that alternates A B A).

Dimension letters: T frames, K neighbours, H height, W width.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .clips import VIDEO_EXTS, list_images, load_video, read_image
from .datasets import DatasetError

log = logging.getLogger(__name__)


def distinct_frames(frames: np.ndarray, min_change: float = 1.0) -> list[int]:
    """Indices of the frames that differ from the previous kept one by more than ``min_change``
    grey levels (mean absolute difference): repeated frames dropped, the first frame always kept.

    frames: (T, H, W, 3) uint8.
    """
    keep = [0]
    for i in range(1, len(frames)):
        if not _same_frame(frames[i], frames[keep[-1]], min_change):
            keep.append(i)
    return keep


def _same_frame(a: np.ndarray, b: np.ndarray, min_change: float) -> bool:
    """The same frame again: uint8 images within ``min_change`` grey levels (mean absolute)."""
    return float(np.abs(a.astype(np.int16) - b).mean()) <= min_change


def _grey(frame: np.ndarray) -> np.ndarray:
    # a 5x5 median takes out lines under 3 px wide (streaks, and thin scene lines with them), so
    # that the flow follows the scene's larger structure, not streaks that differ in every frame
    return cv2.GaussianBlur(cv2.medianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 5), (5, 5), 1.0)


def warp_onto(frame: np.ndarray, other: np.ndarray, flow: cv2.DISOpticalFlow | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """``other`` warped onto ``frame`` by dense optical flow (DIS), and where that is defined.

    frame, other: (H, W, 3) uint8. Returns ((H, W, 3) uint8, (H, W) bool: the source pixel lies
    inside ``other``).
    """
    flow = flow or cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    h, w = frame.shape[:2]
    f = flow.calc(_grey(frame), _grey(other), None)                 # (H, W, 2): where each pixel went
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + f[..., 0], gy + f[..., 1]
    # nearest, not bilinear: a fractional shift would smear a one-pixel line into a dimmer pair,
    # and frame t's line would then look brighter than the neighbour's
    warped = cv2.remap(other, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return warped, (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)


def transient_rain_target(frames: np.ndarray, neighbours: int = 2, threshold: float = 6.0,
                          max_misfit: float = 12.0, local_misfit: float = 15.0, min_change: float = 1.0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Targets for a clip of *distinct* real rainy frames: rain (bright, transient) replaced by
    the scene seen through the neighbours, everything else left as it is.

    frames: (T, H, W, 3) uint8, T >= 3, repeated frames already dropped (:func:`distinct_frames`;
    a neighbour within ``min_change`` of frame t, as in A B A, is skipped the same way).
    Returns (targets (T, H, W, 3) uint8, rain masks (T, H, W) bool). A frame with fewer than two
    usable neighbours gets no mask (its target is itself).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) < 3:
        raise DatasetError(f'transient_rain_target needs (T >= 3, H, W, 3) uint8 frames, got '
                           f'{frames.dtype} {frames.shape}')
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    targets, masks = frames.copy(), np.zeros(frames.shape[:3], bool)
    for t, frame in enumerate(frames):
        grey = frame.astype(np.float32).mean(-1)
        smooth = _grey(frame).astype(np.float32)
        warped, valid, raw = [], [], []
        for u in range(max(0, t - neighbours), min(len(frames), t + neighbours + 1)):
            if u == t:
                continue
            if _same_frame(frames[u], frame, min_change):
                continue                         # the same frame again (A B A in a re-encoded video)
            w, v = warp_onto(frame, frames[u], flow)
            misfit = np.abs(w.astype(np.float32).mean(-1) - grey)[v]
            if misfit.size == 0 or float(np.median(misfit)) > max_misfit:
                continue                                              # a cut, or the flow failed
            # where the flow is locally wrong (next to an overlay that stays on the screen while
            # the scene moves, at occlusions), the streak-free images disagree over a 9x9 window:
            # that neighbour does not see those pixels
            local = cv2.blur(np.abs(_grey(w).astype(np.float32) - smooth), (9, 9))
            warped.append(w), valid.append(v & (local < local_misfit))
            raw.append(frames[u].astype(np.float32).mean(-1))
        if len(warped) < 2:
            continue
        stack = np.stack(warped).astype(np.float32)                  # (K, H, W, 3)
        seen = np.stack(valid)                                        # (K, H, W)
        # against each neighbour's brightest pixel within one pixel: a thin bright scene line that
        # the flow misplaces by a pixel or less is still matched (flow is rarely better than that)
        reach = np.stack([cv2.dilate(g, np.ones((3, 3), np.uint8)) for g in stack.mean(-1)])
        brighter = ((grey[None] - reach) > threshold) & seen
        n_seen = seen.sum(0)
        rain = (brighter.sum(0) >= np.maximum(n_seen - 1, 2)) & (n_seen >= 2)
        on_screen = (grey[None] - np.stack(raw)) > threshold        # transient on the screen too
        rain &= on_screen.sum(0) >= len(raw) - 1
        rain = cv2.dilate(rain.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if not rain.any():
            continue
        with warnings.catch_warnings():  # pixels no neighbour sees: NaN, left out just below
            warnings.simplefilter('ignore', RuntimeWarning)
            scene = np.nanmedian(np.where(seen[..., None], stack, np.nan), 0)
        rain &= np.isfinite(scene).all(-1)
        target = frame.astype(np.float32)
        target[rain] = np.minimum(target[rain], scene[rain])
        targets[t], masks[t] = np.clip(np.round(target), 0, 255).astype(np.uint8), rain
    return targets, masks


def find_real_clips(roots: Sequence[str | Path]) -> list[tuple[str, list[Path] | Path]]:
    """(name, frame files or a video file) per clip: every folder under ``roots`` (or a root
    itself) that holds at least 3 images, in natural order, and every video file given or found
    there (``clips.VIDEO_EXTS``)."""
    clips: list[tuple[str, list[Path] | Path]] = []
    for root in roots:
        root = Path(root)
        if root.is_file() and root.suffix.lower() in VIDEO_EXTS:
            clips.append((root.name, root))
            continue
        if not root.is_dir():
            raise DatasetError(f'real rain root {root} is not a folder or a video file: expected a '
                               f'folder of frames (or folders of frames, one per clip) or a video '
                               f'({", ".join(VIDEO_EXTS)})')
        for folder in [root, *sorted(p for p in root.rglob('*') if p.is_dir())]:
            files = list_images(folder)
            if len(files) >= 3:
                clips.append((folder.relative_to(root.parent).as_posix(), files))
            clips += [(v.relative_to(root.parent).as_posix(), v) for v in sorted(folder.iterdir())
                      if v.is_file() and v.suffix.lower() in VIDEO_EXTS]
    if not clips:
        raise DatasetError(f'no folder with 3 or more frames and no video under {[str(r) for r in roots]}')
    return clips


class RealRainClips:
    """Training clips of real rainy video with self-supervised targets.

    Args:
        roots: folders of consecutive rainy frames (a folder of frames is one clip) or video files.
        holdout: frames at the end of every clip never used, not even as a neighbour (keep them
            to judge the fine-tuned model on frames it never saw).
        neighbours, threshold, max_misfit: see :func:`transient_rain_target`.
        min_change: see :func:`distinct_frames`.
        max_frames: frames read per clip at most (they and their targets are held in memory:
            600 frames of 640x480 take about 1.1 GB); the held-out frames are the last of those.

    The targets are computed once, when the object is made (about a second per frame at 640x360
    on a 2-core CPU).
    """

    def __init__(self, roots: Sequence[str | Path], holdout: int = 0, neighbours: int = 2,
                 threshold: float = 6.0, max_misfit: float = 12.0, min_change: float = 1.0,
                 max_frames: int = 600) -> None:
        if isinstance(roots, (str, Path)):
            roots = [roots]
        if holdout < 0:
            raise DatasetError(f'real_holdout={holdout}: expected >= 0 frames')
        self.clips: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []  # name, rainy, targets, masks
        for name, source in find_real_clips(roots):
            if isinstance(source, Path):
                frames = list(load_video(source, max_frames=max_frames + 1))
            else:
                frames = [read_image(f) for f in source[:max_frames + 1]]
            if len(frames) > max_frames:
                log.warning('real rain clip %s: only its first %d frames are used (max_frames)', name, max_frames)
                frames = frames[:max_frames]
            if len({f.shape for f in frames}) > 1:
                raise DatasetError(f'real rain clip {name}: frames differ in size; expected one camera '
                                   'resolution per clip')
            total = len(frames)
            used = np.stack(frames[:total - holdout])
            if len(used) < 3:
                raise DatasetError(f'real rain clip {name}: {total} frames with {holdout} held out '
                                   'leaves fewer than 3 to train on')
            frames = used[distinct_frames(used, min_change)]
            if len(frames) < 3:
                raise DatasetError(f'real rain clip {name}: fewer than 3 distinct frames')
            targets, masks = transient_rain_target(frames, neighbours, threshold, max_misfit,
                                                   min_change=min_change)
            log.info('real rain clip %s: %d frames (%d distinct) trained on, %d held out; rain mask '
                     '%.1f %% of pixels', name, len(used), len(frames), holdout, 100 * masks.mean())
            self.clips.append((name, frames, targets, masks))
        self._weights = np.asarray([len(c[1]) for c in self.clips], np.float64)
        self._weights /= self._weights.sum()

    def sample(self, count: int, rng: np.random.Generator, stride: Sequence[int] = (1, 2)
               ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """(name, rainy (count, H, W, 3), targets (count, H, W, 3), rain masks (count, H, W) bool)
        of consecutive distinct frames at a random stride (shortened to fit the clip), forwards
        or backwards."""
        name, frames, targets, masks = self.clips[int(rng.choice(len(self.clips), p=self._weights))]
        n = len(frames)
        step = max(1, min(int(rng.integers(stride[0], stride[1] + 1)), (n - 1) // max(count - 1, 1)))
        span = step * (count - 1)
        start = int(rng.integers(0, n - span)) if n > span else 0
        idx = [min(start + step * k, n - 1) for k in range(count)]
        if rng.random() < 0.5:
            idx = idx[::-1]
        return name, frames[idx], targets[idx], masks[idx]
