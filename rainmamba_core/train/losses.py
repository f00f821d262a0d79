"""Training losses: Charbonnier, the authors' perceptual loss and the difference-guided dynamic
contrastive locality loss (DCL) of RainMamba (arXiv 2407.21773, Sec. 3.4, Eq. 9-11).

What the authors' code does (TonyHongtaoWu/RainMamba, ``code/*/mmedit/models/derainers/
derainer.py``; read for reference, not copied) and what is implemented here:

* Total loss (their ``forward_train``): ``L = Charb(out, gt) + 0.3 * Perc(out, gt) +
  0.1 * DCL``. The weights live in the trainer config (``loss.perceptual``, ``loss.dcl``).
* Charbonnier (MMEditing's ``CharbonnierLoss``): ``mean(sqrt((x - y)^2 + eps))`` with
  ``eps = 1e-12``.
* Perceptual: VGG16 ``features[:16]`` (to relu3_3); the MSE between output and target features
  at relu1_2, relu2_2 and relu3_3, averaged over the three layers. Inputs go in as [0, 1] RGB
  *without* ImageNet normalisation, as the authors do; ``imagenet_norm=True`` normalises instead
  (then the 0.3 weight was not tuned for it).
* DCL (their ``sample_patches`` + ``ContrastLoss``), per batch element b and frame t,
  ``samples`` times (authors: ``int(10 / B)``; here at least 1):
    - anchor: a 16x16 patch of the *output* at a random pixel where the grey difference
      ``mean_c |gt - lq|`` exceeds its frame mean (top-left corner clamped into the frame);
    - positive: a 16x16 patch of ``gt`` at frame t, t-1 or t+1 (clamped), its corner drawn
      uniformly within +-``positive_range`` of the anchor's;
    - negative: a 16x16 patch of the rainy input ``lq`` at a random frame, whose corner is more
      than ``min_negative_distance`` away from the anchor's in x or in y; with p=0.5 colour
      jitter (brightness 0.5, contrast 0.5, saturation 0.5, hue 0.25) and with p=0.5 Gaussian
      blur (kernel 1, 3 or 5, sigma in [0.1, 2]);
    - distances follow Eq. 10-11 as coded by the authors, with progress p = step / iterations:
      ``min_negative_distance = int(max(96 * 0.5 ** p, 60))`` (shrinks: harder negatives) and
      ``positive_range = int(min(0 + p * 12, 12))`` (grows: looser positives);
    - features: VGG19 ``features[:1]`` (conv1_1) and ``features[:3]`` (conv1_2, before its
      ReLU); ``d(x, y) = 0.5 * L1(f1(x), f1(y)) + 0.5 * L1(f3(x), f3(y))`` with means over all
      patches of the batch; the loss is ``d(a, p) / (d(a, n) + 1e-7)`` with positives and
      negatives detached (a ratio of batch means, as in their code).

Deviations (each an explicit choice, switchable where it matters):

1. Schedule length: the authors divide by a hard-coded ``total_train = 600000`` while their
   VRDS run is 300k iterations, so their schedule stops halfway (min distance ~68, range ~6).
   Here p = step / ``schedule_iters``, default the run's iterations (the paper's intent: the
   full schedule over training); ``schedule_iters=2 * iterations`` reproduces their code.
2. Small crops: with crops under ~2 x 60 + 16 px no patch can lie 60 px away. The negative
   distance is capped at ``(max(H, W) - patch) // 2`` (logged once); at the authors' 256 crops
   nothing changes.
3. Hue jitter rotates chroma in YIQ space (torchvision goes through HSV); brightness, contrast
   and saturation follow torchvision's formulas, applied in a random order as it does.
4. Random draws come from a numpy Generator seeded from torch's global RNG, so they are
   reproducible under the trainer's seeding and restored with its checkpointed RNG state (the
   authors use python's ``random``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rainmamba_core.errors import RainMambaError

from .vgg import VGGFeatures

log = logging.getLogger(__name__)


class LossError(RainMambaError, ValueError):
    """A loss got inputs of the wrong shape or an invalid option."""


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12,
                     reduction: str = 'mean') -> torch.Tensor:
    """Charbonnier (smooth L1): ``sqrt((pred - target)^2 + eps)``, mean (or sum / none).

    Args:
        pred, target: tensors of the same shape, e.g. (B, T, 3, H, W).
    """
    if pred.shape != target.shape:
        raise LossError(f'charbonnier_loss: pred {tuple(pred.shape)} and target '
                        f'{tuple(target.shape)} must have the same shape')
    loss = torch.sqrt((pred - target) ** 2 + eps)
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'sum':
        return loss.sum()
    if reduction == 'none':
        return loss
    raise LossError(f"reduction={reduction!r}: expected 'mean', 'sum' or 'none'")


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Minus the PSNR in dB of [0, 1] images, per frame then averaged: ``mean(10 log10(MSE + eps))``.

    The evaluation metric as a loss. PSNR is a log of the error, so each frame's *relative*
    improvement counts the same: a nearly clean light-rain frame matters as much as a storm frame,
    where Charbonnier is dominated by the frames with the largest errors. ``eps`` caps a perfect
    frame at 100 dB (the value of identical images is ``10 log10(eps)`` = -100, the minimum).

    Args:
        pred, target: (B, T, 3, H, W) or (N, 3, H, W).
    """
    if pred.shape != target.shape:
        raise LossError(f'psnr_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} '
                        'must have the same shape')
    mse = ((_frames(pred) - _frames(target)) ** 2).flatten(1).mean(1)
    return (10.0 * torch.log10(mse + eps)).mean()


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) or (N, 3, H, W) -> (N, 3, H, W)."""
    if x.dim() == 5:
        return x.reshape(-1, *x.shape[2:])
    if x.dim() == 4:
        return x
    raise LossError(f'expected (B, T, 3, H, W) or (N, 3, H, W), got {tuple(x.shape)}')


class PerceptualLoss(nn.Module):
    """Mean over VGG16 relu1_2, relu2_2, relu3_3 of the feature MSE (the authors' loss).

    Args:
        vgg16_path: torchvision ``vgg16-397923af.pth`` (local file).
        layers: ``features`` indices (default relu1_2=3, relu2_2=8, relu3_3=15).
        imagenet_norm: normalise inputs with ImageNet statistics (authors: no).
    """

    def __init__(self, vgg16_path: str | Path | None, layers: tuple[int, ...] = (3, 8, 15),
                 imagenet_norm: bool = False) -> None:
        super().__init__()
        self.vgg = VGGFeatures('vgg16', list(layers), vgg16_path, imagenet_norm,
                               what='the perceptual loss (loss.perceptual > 0)')

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target: (B, T, 3, H, W) or (N, 3, H, W) in [0, 1] -> scalar."""
        fp = self.vgg(_frames(pred))
        with torch.no_grad():
            ft = self.vgg(_frames(target))
        return sum(F.mse_loss(a, b) for a, b in zip(fp, ft)) / len(fp)  # type: ignore[return-value]


def build_perceptual_loss(vgg16_path: str | None, **options) -> PerceptualLoss:
    """Trainer entry point; options go to :class:`PerceptualLoss`."""
    if 'layers' in options:
        options['layers'] = tuple(options['layers'])
    return PerceptualLoss(vgg16_path, **options)


# --------------------------------------------------------------------------------------------
# DCL


def dcl_distances(step: int, schedule_iters: int, negative_initial: float = 96,
                  negative_decay: float = 0.5, negative_min: float = 60,
                  positive_initial: float = 0, positive_max: float = 12) -> tuple[int, int]:
    """(min_negative_distance, positive_range) at `step` (Eq. 10-11 as the authors code them)."""
    p = step / max(schedule_iters, 1)
    d_neg = int(max(negative_initial * negative_decay ** p, negative_min))
    d_pos = int(min(positive_initial + p * (positive_max - positive_initial), positive_max))
    return d_neg, d_pos


def _gaussian_blur(x: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """x: (3, h, w); reflect-padded separable Gaussian (torchvision's GaussianBlur behaviour)."""
    if k <= 1:
        return x
    r = k // 2
    g = torch.exp(-0.5 * (torch.arange(k, dtype=x.dtype, device=x.device) - r) ** 2 / sigma ** 2)
    g = g / g.sum()
    y = F.pad(x[None], (r, r, r, r), mode='reflect')
    y = F.conv2d(y, g.view(1, 1, 1, k).expand(3, 1, 1, k), groups=3)
    y = F.conv2d(y, g.view(1, 1, k, 1).expand(3, 1, k, 1), groups=3)
    return y[0]


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def _colour_jitter(x: torch.Tensor, rng: np.random.Generator, brightness: float = 0.5,
                   contrast: float = 0.5, saturation: float = 0.5, hue: float = 0.25) -> torch.Tensor:
    """x: (3, h, w) in [0, 1]; brightness/contrast/saturation/hue jitter in a random order."""
    ops = []
    b = rng.uniform(1 - brightness, 1 + brightness)
    ops.append(lambda y: (y * b).clamp(0, 1))
    c = rng.uniform(1 - contrast, 1 + contrast)
    ops.append(lambda y: ((y - _grey(y).mean()) * c + _grey(y).mean()).clamp(0, 1))
    s = rng.uniform(1 - saturation, 1 + saturation)
    ops.append(lambda y: ((y - _grey(y)) * s + _grey(y)).clamp(0, 1))
    angle = rng.uniform(-hue, hue) * 2 * math.pi

    def hue_shift(y: torch.Tensor) -> torch.Tensor:
        # rotate the chroma plane of YIQ by `angle` (a hue turn; see module doc, deviation 3)
        m = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                         dtype=y.dtype, device=y.device)
        ca, sa = math.cos(angle), math.sin(angle)
        rot = torch.tensor([[1, 0, 0], [0, ca, -sa], [0, sa, ca]], dtype=y.dtype, device=y.device)
        full = torch.linalg.inv(m) @ rot @ m
        return torch.einsum('ij,jhw->ihw', full, y).clamp(0, 1)
    ops.append(hue_shift)
    for i in rng.permutation(4):
        x = ops[i](x)
    return x


class DCLLoss(nn.Module):
    """Difference-guided dynamic contrastive locality loss (see the module docstring).

    Args:
        vgg19_path: torchvision ``vgg19-dcbb9e9d.pth`` (local file).
        total_iters: the run's iterations (the trainer passes them).
        schedule_iters: progress denominator of Eq. 10-11 (default ``total_iters``).
        patch: patch side (authors 16).
        samples: anchors per clip and frame across the batch (authors 10, split over B).
        negative_initial, negative_decay, negative_min, positive_initial, positive_max:
            Eq. 10-11 constants (authors 96, 0.5, 60, 0, 12).
        imagenet_norm: normalise VGG inputs (authors: no).
    """

    def __init__(self, vgg19_path: str | Path | None, total_iters: int = 300_000,
                 schedule_iters: int | None = None, patch: int = 16, samples: int = 10,
                 negative_initial: float = 96, negative_decay: float = 0.5, negative_min: float = 60,
                 positive_initial: float = 0, positive_max: float = 12,
                 imagenet_norm: bool = False) -> None:
        super().__init__()
        self.vgg = VGGFeatures('vgg19', [0, 2], vgg19_path, imagenet_norm,
                               what='the contrastive loss DCL (loss.dcl > 0)')
        self.schedule_iters = int(schedule_iters or total_iters)
        self.patch, self.samples = patch, samples
        self.sched = dict(negative_initial=negative_initial, negative_decay=negative_decay,
                          negative_min=negative_min, positive_initial=positive_initial,
                          positive_max=positive_max)
        self._warned_small = False

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """0.5 * L1(conv1_1) + 0.5 * L1(conv1_2) over patches x, y: (N, 3, p, p)."""
        fx, fy = self.vgg(x), self.vgg(y)
        return 0.5 * F.l1_loss(fx[0], fy[0]) + 0.5 * F.l1_loss(fx[1], fy[1])

    def sample(self, out: torch.Tensor, gt: torch.Tensor, lq: torch.Tensor, step: int,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Anchors (from out), positives (gt), augmented negatives (lq): each (N, 3, p, p)."""
        B, T, _, H, W = out.shape
        P = self.patch
        if H < P or W < P:
            raise LossError(f'DCL: frames {H}x{W} are smaller than the {P}x{P} patches; raise the crop')
        d_neg, d_pos = dcl_distances(step, self.schedule_iters, **self.sched)
        cap = (max(H, W) - P) // 2
        if d_neg > cap:
            if not self._warned_small:
                log.info('DCL: %dx%d crops cannot hold negatives %d px away; capped at %d px',
                         H, W, d_neg, cap)
                self._warned_small = True
            d_neg = max(cap, 0)
        per = max(1, self.samples // B)
        grey = (gt - lq).abs().mean(dim=2)  # (B, T, H, W)
        thr = grey.mean(dim=(2, 3), keepdim=True)
        anchors, positives, negatives = [], [], []
        for b in range(B):
            for t in range(T):
                points = torch.nonzero(grey[b, t] > thr[b, t], as_tuple=False).cpu().numpy()
                for _ in range(per):
                    if len(points):
                        py, px = points[rng.integers(len(points))]
                        ay, ax = min(int(py), H - P), min(int(px), W - P)
                    else:
                        ay, ax = int(rng.integers(0, H - P + 1)), int(rng.integers(0, W - P + 1))
                    anchors.append(out[b, t, :, ay:ay + P, ax:ax + P])
                    tp = int(np.clip(t + rng.choice([0, -1, 1]), 0, T - 1))
                    qx = int(rng.integers(max(0, ax - d_pos), min(W - P, ax + d_pos) + 1))
                    qy = int(rng.integers(max(0, ay - d_pos), min(H - P, ay + d_pos) + 1))
                    positives.append(gt[b, tp, :, qy:qy + P, qx:qx + P])
                    ny, nx = self._far_corner(ay, ax, H, W, d_neg, rng)
                    tn = int(rng.integers(0, T))
                    neg = lq[b, tn, :, ny:ny + P, nx:nx + P]
                    if rng.random() < 0.5:
                        neg = _colour_jitter(neg, rng)
                    if rng.random() < 0.5:
                        k = int(rng.random() * 4.95)
                        k = k + 1 if k % 2 == 0 else k  # 1, 3 or 5 as the authors draw it
                        neg = _gaussian_blur(neg, k, float(rng.uniform(0.1, 2.0)))
                    negatives.append(neg)
        return torch.stack(anchors), torch.stack(positives), torch.stack(negatives)

    def _far_corner(self, ay: int, ax: int, H: int, W: int, d: int, rng: np.random.Generator
                    ) -> tuple[int, int]:
        """A patch corner with |dx| > d or |dy| > d from (ax, ay), uniform over those corners."""
        P = self.patch
        for _ in range(64):
            ny, nx = int(rng.integers(0, H - P + 1)), int(rng.integers(0, W - P + 1))
            if abs(nx - ax) > d or abs(ny - ay) > d:
                return ny, nx
        # rare (anchor near the middle of a small crop): take the farthest corner
        return (0 if ay > (H - P) / 2 else H - P), (0 if ax > (W - P) / 2 else W - P)

    def forward(self, out: torch.Tensor, gt: torch.Tensor, lq: torch.Tensor, step: int = 0
                ) -> torch.Tensor:
        """out, gt, lq: (B, T, 3, H, W) in [0, 1] -> scalar d(a, p) / (d(a, n) + 1e-7)."""
        if out.dim() != 5 or out.shape != gt.shape or out.shape != lq.shape:
            raise LossError(f'DCL needs out, gt, lq of equal shape (B, T, 3, H, W); got '
                            f'{tuple(out.shape)}, {tuple(gt.shape)}, {tuple(lq.shape)}')
        seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            gt_d, lq_d = gt.detach(), lq.detach()
        a, p, n = self.sample(out, gt_d, lq_d, step, rng)
        d_ap = self.distance(a, p.detach())
        d_an = self.distance(a, n.detach())
        return d_ap / (d_an + 1e-7)


def build_dcl_loss(vgg19_path: str | None, total_iters: int = 300_000, **options) -> DCLLoss:
    """Trainer entry point; options go to :class:`DCLLoss`."""
    return DCLLoss(vgg19_path, total_iters=total_iters, **options)
