"""Image and video quality metrics by the authors' conventions (MMEditing 0.x, as in RainMamba's
``test_cfg = dict(metrics=['PSNR', 'SSIM'], crop_border=0)``):

* frames are quantised like ``tensor2img``: clamp to [0, 1], x255, round, uint8;
* PSNR and SSIM on RGB in 0-255 (``convert_to=None``), ``crop_border=0``;
* SSIM: 11x11 Gaussian window (sigma 1.5), C1 = (0.01*255)^2, C2 = (0.03*255)^2, the map kept
  where the window fits (``[5:-5, 5:-5]``), computed per channel and averaged;
* a clip scores the mean over its frames; a dataset the mean over its clips.

PSNR is computed in float64 (MMEditing casts to float32 first; the difference is below 1e-4 dB).

Temporal consistency (``tmad``): the mean absolute difference between the output's and the
ground truth's frame-to-frame changes, ``mean_t mean |(o_t - o_{t-1}) - (g_t - g_{t-1})|`` in
0-255 units (lower is better; 0 when the output changes exactly as the truth does). It needs no
optical flow: flicker and lingering rain show up as changes the clean video does not have, while
true motion cancels out as long as the output follows it. It is not an absolute measure of
temporal quality (a static-camera clip and a fast pan score on different scales), so compare
methods on the same clips only.

Arrays are (H, W, 3) per frame and (T, H, W, 3) per clip, uint8 or float in 0-255.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from rainmamba_core.errors import RainMambaError
from rainmamba_core.safe_load import safe_load


class MetricError(RainMambaError, ValueError):
    """Inputs to a metric have mismatched shapes or the wrong range/type."""


def to_uint8(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """[0, 1] float (tensor or array) -> uint8 0-255, rounded like MMEditing's tensor2img.

    uint8 inputs pass through. Tensors are (..., 3, H, W) and come out channels-last;
    numpy arrays are taken as channels-last already.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu()
        if x.dim() >= 3 and x.shape[-3] == 3:  # torch tensors are channels-first
            x = x.movedim(-3, -1)
        x = x.numpy()
    if x.dtype == np.uint8:
        return x
    return (np.clip(x, 0, 1) * 255.0).round().astype(np.uint8)


def _check(a: np.ndarray, b: np.ndarray, name: str) -> None:
    if a.shape != b.shape:
        raise MetricError(f'{name}: shapes differ {a.shape} vs {b.shape}')


def psnr(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0) -> float:
    """PSNR (dB) of two images in 0-255 (any shape, e.g. (H, W, 3)); inf when identical."""
    _check(img1, img2, 'psnr')
    a, b = np.asarray(img1, np.float64), np.asarray(img2, np.float64)
    if crop_border:
        c = crop_border
        a, b = a[c:-c, c:-c], b[c:-c, c:-c]
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float('inf')
    return float(20.0 * np.log10(255.0 / np.sqrt(mse)))


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    win = k @ k.T
    mu1 = cv2.filter2D(a, -1, win)[5:-5, 5:-5]
    mu2 = cv2.filter2D(b, -1, win)[5:-5, 5:-5]
    s11 = cv2.filter2D(a * a, -1, win)[5:-5, 5:-5] - mu1 ** 2
    s22 = cv2.filter2D(b * b, -1, win)[5:-5, 5:-5] - mu2 ** 2
    s12 = cv2.filter2D(a * b, -1, win)[5:-5, 5:-5] - mu1 * mu2
    num = (2 * mu1 * mu2 + c1) * (2 * s12 + c2)
    den = (mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2)
    return float((num / den).mean())


def ssim(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0) -> float:
    """SSIM of two (H, W[, C]) images in 0-255, per channel then averaged (H, W >= 11)."""
    _check(img1, img2, 'ssim')
    a, b = np.asarray(img1, np.float64), np.asarray(img2, np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if crop_border:
        c = crop_border
        a, b = a[c:-c, c:-c], b[c:-c, c:-c]
    if min(a.shape[:2]) < 11:
        raise MetricError(f'ssim: images {a.shape[:2]} are smaller than the 11x11 window')
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def tmad(out: np.ndarray, gt: np.ndarray) -> float:
    """Temporal consistency error of clips (T, H, W, 3), 0-255 units; nan when T < 2."""
    _check(out, gt, 'tmad')
    if out.shape[0] < 2:
        return float('nan')
    o, g = np.asarray(out, np.float32), np.asarray(gt, np.float32)
    return float(np.mean(np.abs(np.diff(o, axis=0) - np.diff(g, axis=0))))


def clip_metrics(out: np.ndarray, gt: np.ndarray, lpips_fn=None) -> dict[str, object]:
    """Per-clip scores of (T, H, W, 3) uint8 clips: mean and per-frame PSNR/SSIM, tMAD, LPIPS."""
    _check(out, gt, 'clip_metrics')
    p = [psnr(o, g) for o, g in zip(out, gt)]
    s = [ssim(o, g) for o, g in zip(out, gt)]
    result: dict[str, object] = {'psnr': float(np.mean(p)), 'ssim': float(np.mean(s)),
                                 'tmad': tmad(out, gt), 'psnr_frames': p, 'ssim_frames': s}
    if lpips_fn is not None:
        result['lpips'] = float(np.mean([lpips_fn(o, g) for o, g in zip(out, gt)]))
    return result


# --------------------------------------------------------------------------------------------
# LPIPS (VGG variant) from local files


class LPIPS:
    """LPIPS distance (Zhang et al. 2018, VGG variant, v0.1) from two local weight files.

    Args:
        lin_path: the linear-layer weights of the ``lpips`` package (``weights/v0.1/vgg.pth``,
            keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``).
        vgg16_path: torchvision's ``vgg16-397923af.pth``.

    Call: ``lpips(img1, img2)`` with (H, W, 3) uint8 -> float (0 = identical).
    """

    LAYERS = [3, 8, 15, 22, 29]  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)

    def __init__(self, lin_path: str | Path, vgg16_path: str | Path, device: str = 'cpu') -> None:
        from rainmamba_core.train.vgg import VGGFeatures
        self.vgg = VGGFeatures('vgg16', self.LAYERS, vgg16_path, what='LPIPS').to(device)
        if not Path(lin_path).is_file():
            raise MetricError(f'LPIPS linear weights {lin_path} not found (the lpips package\'s '
                              'weights/v0.1/vgg.pth)')
        state = safe_load(lin_path, MetricError, 'the LPIPS linear weights', "the lpips package's v0.1 vgg.pth")
        try:
            self.lins = [state[f'lin{i}.model.1.weight'].float().to(device) for i in range(5)]
        except KeyError as exc:
            raise MetricError(f'{lin_path}: key {exc} missing; expected the lpips v0.1 vgg.pth') from None
        self.device = device
        self.shift = torch.tensor(self.SHIFT).view(1, 3, 1, 1).to(device)
        self.scale = torch.tensor(self.SCALE).view(1, 3, 1, 1).to(device)

    @torch.no_grad()
    def __call__(self, img1: np.ndarray, img2: np.ndarray) -> float:
        def prep(img: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
            return (x.to(self.device) - self.shift) / self.scale
        # the VGG wrapper expects [0, 1]; LPIPS feeds its own scaled input, so bypass imagenet_norm
        f1, f2 = self.vgg(prep(img1)), self.vgg(prep(img2))
        total = 0.0
        for a, b, w in zip(f1, f2, self.lins):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = torch.nn.functional.conv2d((a - b) ** 2, w)
            total += float(d.mean())
        return total
