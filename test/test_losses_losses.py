"""Losses: Charbonnier, perceptual (VGG16) and DCL (VGG19) with random local VGG weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rainmamba_core.train.losses import (
    LossError,
    build_dcl_loss,
    build_perceptual_loss,
    charbonnier_loss,
    dcl_distances,
    psnr_loss,
)
from rainmamba_core.train.vgg import VGGFeatures, VGGWeightsError, make_features, save_random_vgg


@pytest.fixture(scope='module')
def vgg_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('vgg')
    return {a: save_random_vgg(root / f'{a}.pth', a) for a in ('vgg16', 'vgg19')}


def test_charbonnier_values() -> None:
    x = torch.rand(1, 2, 3, 8, 8)
    # identical inputs: sqrt(eps) = 1e-6 everywhere
    assert charbonnier_loss(x, x).item() == pytest.approx(1e-6, rel=1e-3)
    # a constant offset d gives sqrt(d^2 + eps) ~ d (float32 rounding of the offset)
    assert charbonnier_loss(x + 0.1, x).item() == pytest.approx(0.1, rel=1e-5)
    assert charbonnier_loss(x + 0.2, x) > charbonnier_loss(x + 0.1, x)
    y = x.clone().requires_grad_(True)
    charbonnier_loss(y, x + 0.1).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_psnr_loss_is_minus_the_mean_frame_psnr() -> None:
    x = torch.rand(1, 2, 3, 8, 8)
    assert psnr_loss(x, x).item() == pytest.approx(-100.0)  # capped by eps = 1e-10
    # frame 0 off by 0.1 everywhere (MSE 1e-2, 20 dB), frame 1 by 0.01 (MSE 1e-4, 40 dB):
    # the loss is minus the mean of the frame PSNRs, -30 dB, not minus the PSNR of the mean MSE (-23 dB).
    y = x.clone()
    y[:, 0] += 0.1
    y[:, 1] += 0.01
    assert psnr_loss(y, x).item() == pytest.approx(-30.0, abs=1e-3)  # float32 rounding of the offsets
    assert psnr_loss(x + 0.2, x) > psnr_loss(x + 0.1, x)
    # A relative improvement counts the same on a clean frame as on a bad one (log of the error):
    # halving the error of either frame lowers the loss by the same 6.02 dB / 2 frames.
    better0, better1 = y.clone(), y.clone()
    better0[:, 0] -= 0.05
    better1[:, 1] -= 0.005
    drop0 = (psnr_loss(y, x) - psnr_loss(better0, x)).item()
    drop1 = (psnr_loss(y, x) - psnr_loss(better1, x)).item()
    assert drop0 == pytest.approx(drop1, abs=1e-2) and drop0 == pytest.approx(3.01, abs=1e-2)
    with pytest.raises(LossError, match='same shape'):
        psnr_loss(x, x[:, :1])


def test_vgg_layout_matches_torchvision_keys() -> None:
    keys16 = list(make_features('vgg16').state_dict())
    assert keys16[0] == '0.weight' and keys16[-1] == '28.bias' and len(keys16) == 26
    keys19 = list(make_features('vgg19').state_dict())
    assert keys19[-1] == '34.bias' and len(keys19) == 32


def test_missing_vgg_file_names_file_and_url(tmp_path: Path) -> None:
    with pytest.raises(VGGWeightsError) as err:
        build_perceptual_loss(str(tmp_path / 'nope.pth'))
    msg = str(err.value)
    assert 'vgg16-397923af.pth' in msg and 'download.pytorch.org' in msg and 'nope.pth' in msg
    with pytest.raises(VGGWeightsError, match='vgg19-dcbb9e9d.pth'):
        build_dcl_loss(None, total_iters=10)


def test_wrong_vgg_file_is_rejected(tmp_path: Path, vgg_files: dict[str, Path]) -> None:
    # a VGG16 file given where VGG19 is expected: missing key or wrong shape, both name vgg19
    with pytest.raises(VGGWeightsError, match='vgg19'):
        VGGFeatures('vgg19', [0, 2, 5, 7, 10, 12, 14, 16], vgg_files['vgg16'])


def test_perceptual_zero_for_identical_and_monotone(vgg_files: dict[str, Path]) -> None:
    loss = build_perceptual_loss(str(vgg_files['vgg16']))
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 1, 3, 24, 24, generator=g)
    noise = torch.randn(gt.shape, generator=g)
    assert loss(gt, gt).item() == 0.0
    small, big = loss(gt + 0.05 * noise, gt), loss(gt + 0.2 * noise, gt)
    assert 0 < small < big
    out = (gt + 0.1 * noise).requires_grad_(True)
    loss(out, gt).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())  # VGG stays frozen


def test_dcl_schedule_end_points() -> None:
    # Eq. 10-11 as coded by the authors: 96 * 0.5**p floored at 60; 12 * p capped at 12
    assert dcl_distances(0, 100) == (96, 0)
    assert dcl_distances(100, 100) == (60, 12)
    assert dcl_distances(50, 100) == (int(max(96 * 0.5 ** 0.5, 60)), 6)


def test_dcl_zero_when_output_is_truth_on_static_clip(vgg_files: dict[str, Path]) -> None:
    torch.manual_seed(0)
    dcl = build_dcl_loss(str(vgg_files['vgg19']), total_iters=100)
    frame = torch.rand(1, 1, 3, 48, 48)
    gt = frame.expand(1, 3, 3, 48, 48).contiguous()  # static scene: t and t+-1 are alike
    lq = (gt + 0.3 * (torch.rand(gt.shape) > 0.9)).clamp(0, 1)
    # step 0: positive range 0, so the positive is the anchor's own window in the truth
    assert dcl(gt, gt, lq, step=0).item() == 0.0
    worse = dcl(lq, gt, lq, step=0)
    assert worse.item() > 0


def test_dcl_gradients_flow_and_are_finite(vgg_files: dict[str, Path]) -> None:
    torch.manual_seed(1)
    dcl = build_dcl_loss(str(vgg_files['vgg19']), total_iters=100, samples=4)
    gt = torch.rand(2, 3, 3, 40, 40)
    lq = (gt + 0.4 * (torch.rand(gt.shape) > 0.85)).clamp(0, 1)
    out = lq.clone().requires_grad_(True)
    value = dcl(out, gt, lq, step=60)  # small crops: negative distance capped (logged)
    value.backward()
    assert torch.isfinite(value) and out.grad is not None and out.grad.abs().sum() > 0
