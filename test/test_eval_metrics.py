"""Metrics against hand-computed values; baselines; the evaluate() runner and the report."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rainmamba_core.eval.baselines import temporal_median
from rainmamba_core.eval.evaluate import evaluate, folder_clips, synthetic_clips
from rainmamba_core.eval.metrics import LPIPS, psnr, ssim, tmad, to_uint8
from rainmamba_core.eval.report import write_report


def test_psnr_constant_offset() -> None:
    img = np.random.default_rng(0).integers(0, 240, (16, 20, 3)).astype(np.uint8)
    # MSE of a constant offset d is d^2: PSNR = 20 log10(255 / d)
    assert psnr(img + 10, img) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    assert psnr(img, img) == math.inf


def test_ssim_identical_is_one_and_constant_images_match_formula() -> None:
    img = np.random.default_rng(1).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    a, b = np.full((16, 16, 3), 100.0), np.full((16, 16, 3), 120.0)
    c1 = (0.01 * 255) ** 2
    # zero variance: SSIM = (2 mu1 mu2 + C1) / (mu1^2 + mu2^2 + C1)
    expected = (2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)


def direct_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM by explicit windowed sums over every valid 11x11 position (no OpenCV)."""
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(a.shape[2]):
        p, q = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        m = []
        for i in range(p.shape[0] - 10):
            for j in range(p.shape[1] - 10):
                wp, wq = p[i:i + 11, j:j + 11], q[i:i + 11, j:j + 11]
                mu1, mu2 = (win * wp).sum(), (win * wq).sum()
                s11 = (win * wp * wp).sum() - mu1 ** 2
                s22 = (win * wq * wq).sum() - mu2 ** 2
                s12 = (win * wp * wq).sum() - mu1 * mu2
                m.append((2 * mu1 * mu2 + c1) * (2 * s12 + c2) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2)))
        vals.append(np.mean(m))
    return float(np.mean(vals))


def test_ssim_matches_direct_formula_on_random_images() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (17, 19, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    # float64 both ways; only summation order differs
    assert ssim(a, b) == pytest.approx(direct_ssim(a, b), abs=1e-10)


def test_tmad_and_to_uint8() -> None:
    gt = np.zeros((3, 4, 4, 3), np.uint8)
    out = gt.copy()
    out[1] = 6  # a flicker: +6 then -6 against a static truth
    assert tmad(gt, gt) == 0.0
    assert tmad(out, gt) == pytest.approx(6.0)
    assert math.isnan(tmad(gt[:1], gt[:1]))
    t = torch.tensor([[[0.0, 0.5, 1.2]]]).expand(3, 1, 3)  # (3, 1, 3) as (C, H, W)
    assert to_uint8(t).tolist() == [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]


def test_temporal_median_is_causal_over_five() -> None:
    clip = np.zeros((7, 1, 1, 3), np.uint8)
    clip[:, 0, 0, 0] = [10, 200, 20, 30, 250, 40, 50]
    med = temporal_median(clip)[:, 0, 0, 0].tolist()
    # t=0: 10; t=1: median(10,200)=105; t=2: 20; t=3: median(10,200,20,30)=25;
    # t=4: median(10..250)=30; t=5: median(200,20,30,250,40)=40; t=6: median(20,30,250,40,50)=40
    assert med == [10, 105, 20, 25, 30, 40, 40]


def test_evaluate_runs_model_and_baselines_and_reports(tmp_path: Path) -> None:
    clips = list(synthetic_clips(None, clips=2, frames=3, size=(48, 64), seed=0))
    res = evaluate(lambda c: c, clips, samples=1)
    m, r = res['methods']['model'], res['methods']['rainy_input']
    # the identity model is the rainy input baseline
    assert m['summary']['psnr'] == pytest.approx(r['summary']['psnr'])
    psnrs = [np.mean([psnr(a, b) for a, b in zip(c[1], c[2])]) for c in clips]
    assert r['summary']['psnr'] == pytest.approx(np.mean(psnrs))  # mean over frames, then clips
    perfect = evaluate(None, clips, baselines=True)
    assert 'model' not in perfect['methods']
    paths = write_report(res, tmp_path / 'rep', meta={'model': 'identity'})
    data = json.loads(paths['json'].read_text())
    assert data['clips'] == 2 and '_samples' not in data
    rows = [ln for ln in (tmp_path / 'rep' / 'report.md').read_text().splitlines() if ln.startswith('| model |')]
    assert len(rows) == 1
    assert len(list((tmp_path / 'rep' / 'images').glob('*.png'))) == 1


def test_folder_clips_reads_ntu_style_pairs_and_unpaired(tmp_path: Path) -> None:
    from rainmamba_core.data.clips import write_image
    for t in range(2):
        write_image(tmp_path / 'a2_Rain' / f'{t:05d}.png', np.full((12, 12, 3), 50, np.uint8))
        write_image(tmp_path / 'a2_GT' / f'{t:05d}.png', np.full((12, 12, 3), 60, np.uint8))
        write_image(tmp_path / 'real' / f'{t:03d}.png', np.full((12, 12, 3), 70, np.uint8))
    (name, lq, gt), = list(folder_clips(tmp_path))
    assert name == 'a2_Rain' and lq.shape == (2, 12, 12, 3) and int(gt[0, 0, 0, 0]) == 60
    (_, lq2, gt2), = list(folder_clips(tmp_path / 'real'))
    assert gt2 is None and lq2.shape == (2, 12, 12, 3)


def test_lpips_from_local_files(tmp_path: Path) -> None:
    from rainmamba_core.train.vgg import save_random_vgg
    vgg = save_random_vgg(tmp_path / 'vgg16.pth', 'vgg16')
    chans = [64, 128, 256, 512, 512]
    torch.save({f'lin{i}.model.1.weight': torch.rand(1, c, 1, 1) for i, c in enumerate(chans)},
               tmp_path / 'lin.pth')
    lp = LPIPS(tmp_path / 'lin.pth', vgg)
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + 40, 0, 255).astype(np.uint8)
    assert lp(a, a) == 0.0
    assert lp(a, b) > 0


def test_lpips_refuses_an_unreadable_or_pickled_weights_file(tmp_path: Path) -> None:
    from rainmamba_core.eval.metrics import MetricError
    from rainmamba_core.train.vgg import save_random_vgg
    vgg = save_random_vgg(tmp_path / 'vgg16.pth', 'vgg16')
    (tmp_path / 'cut.pth').write_bytes(b'PK\x03\x04 truncated download')
    with pytest.raises(MetricError, match=r'cannot read the LPIPS linear weights .*cut\.pth'):
        LPIPS(tmp_path / 'cut.pth', vgg)
    torch.save({'lin0.model.1.weight': torch.nn.Conv2d(1, 1, 1)}, tmp_path / 'pickled.pth')  # a module object
    with pytest.raises(MetricError, match='safe loader') as info:
        LPIPS(tmp_path / 'pickled.pth', vgg)
    assert 'weights_only=False' not in str(info.value)
