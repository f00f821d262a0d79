"""Two CPU processes under torchrun (gloo): both ranks end with identical weights, and the data
stream is the one a single process with the same global batch would see."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rainmamba_core.models.rainmamba import RainMamba
from rainmamba_core.train.config import config_from_dict
from rainmamba_core.train.trainer import Trainer, state_hash


def write_paired_folders(root: Path, frames: int = 4, size: int = 40) -> None:
    """lq/seq0/0000000i.png and gt/seq0/... in the authors' layout, random content."""
    import cv2
    rng = np.random.default_rng(0)
    for i in range(frames):
        gt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        lq = np.clip(gt.astype(np.int32) + rng.integers(0, 80, gt.shape), 0, 255).astype(np.uint8)
        for kind, img in (('gt', gt), ('lq', lq)):
            folder = root / kind / 'seq0'
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f'{i:08d}.png'), img)


def run_config(root: Path, batch: int) -> dict:
    return {
        'name': 'ddp_test',
        'model': {'preset': 'tiny', 'causal': True},
        'data': {'kind': 'paired', 'lq_root': str(root / 'lq'), 'gt_root': str(root / 'gt'),
                 'frames': 2, 'crop': 32, 'batch': batch, 'workers': 0,
                 'options': {'repeat': 8}},
        'train': {'iterations': 2, 'warmup_iters': 1, 'lr': 1e-3, 'log_interval': 1,
                  'ckpt_interval': 2, 'eval_interval': 100, 'device': 'cpu', 'amp': 'off',
                  'threads': 1, 'seed': 3},
    }


def test_two_gloo_processes_keep_identical_weights(tmp_path: Path) -> None:
    write_paired_folders(tmp_path / 'data')
    cfg_path = tmp_path / 'ddp.yaml'
    cfg_path.write_text(yaml.safe_dump(run_config(tmp_path / 'data', batch=1)))
    out = tmp_path / 'run'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'rainmamba_core.train.cli', '--config', str(cfg_path), '--out', str(out),
           '--no-progress']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    state = torch.load(out / 'ckpt_00000002.pt', weights_only=True)['train_state']
    assert state['world_size'] == 2 and len(state['rank_hashes']) == 2
    # Every rank hashed its own replica at the checkpoint: all equal, and equal to what was saved.
    assert state['rank_hashes'][0] == state['rank_hashes'][1]
    assert state_hash(RainMamba.from_checkpoint(out / 'ckpt_00000002.pt')) == state['rank_hashes'][0]

    # Rank r takes slot r of each global batch: the step-1 loss (before any update, so the
    # same initial weights) equals one process drawing the whole global batch of 2.
    with (out / 'train_log.csv').open() as fh:
        ddp_loss = float(next(csv.DictReader(fh))['loss'])
    single = Trainer(config_from_dict(run_config(tmp_path / 'data', batch=2)),
                     run_dir=tmp_path / 'single', progress=False)
    result = single.train_step(next(iter(single._loader())))
    # Mean of per-rank means vs one mean over both clips: float summation order only.
    assert ddp_loss == pytest.approx(result['loss'], rel=1e-5)
