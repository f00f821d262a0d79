"""Trainer: exact resume, atomic checkpoints, distillation, the CLI on real synthetic rain.

All runs use the real tiny RainMamba on 32x32 crops of 2 frames (the smallest size its
stride-32 encoder accepts) so each step takes a fraction of a second.
"""
from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
from rainmamba_core.train import checkpoint as ckpt
from rainmamba_core.train.config import ConfigError, TrainConfig, config_from_dict
from rainmamba_core.train.losses import charbonnier_loss
from rainmamba_core.train.trainer import Trainer, TrainError, state_hash


class ToyRain(Dataset):
    """Random clips drawn from the global torch RNG (which the trainer seeds per sample)."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> dict:
        gt = torch.rand(2, 3, 32, 32)
        streaks = (torch.rand(2, 1, 32, 32) > 0.9).float()
        return {'lq': (gt + 0.5 * streaks).clamp(0, 1), 'gt': gt, 'key': f'toy{index}'}


def make_cfg(**train: object) -> TrainConfig:
    t = dict(iterations=2, warmup_iters=1, lr=1e-3, log_interval=1, ckpt_interval=1,
             eval_interval=100, device='cpu', amp='off', keep_last=5, threads=2)
    t.update(train)
    return config_from_dict({
        'model': {'preset': 'tiny', 'causal': True},
        'data': {'kind': 'synthetic', 'clean_roots': ['unused'], 'frames': 2, 'crop': 32,
                 'batch': 1, 'workers': 0},
        'train': t})


def csv_rows(path: Path) -> list[dict]:
    with path.open(newline='') as fh:
        return list(csv.DictReader(fh))


def test_logged_losses_are_means_over_the_log_interval(tmp_path: Path) -> None:
    every = Trainer(make_cfg(iterations=4), run_dir=tmp_path / 'a', train_set=ToyRain(), progress=False)
    every.train()
    pairs = Trainer(make_cfg(iterations=4, log_interval=2), run_dir=tmp_path / 'b', train_set=ToyRain(),
                    progress=False)
    pairs.train()
    a = csv_rows(tmp_path / 'a' / 'train_log.csv')
    b = csv_rows(tmp_path / 'b' / 'train_log.csv')
    assert [r['step'] for r in b] == ['2', '4']
    for row, (x, y) in zip(b, [(a[0], a[1]), (a[2], a[3])]):
        # same seeds, same ops: the two runs take identical steps, so the mean is exact up to
        # the float formatting of the CSV (repr of a double: ~1e-16 relative)
        want = (float(x['loss']) + float(y['loss'])) / 2
        assert float(row['loss']) == pytest.approx(want, rel=1e-12)
        assert float(row['lr']) == float(y['lr'])  # the rate is the last step's, not a mean
    assert float(a[0]['loss']) != float(a[1]['loss'])  # the mean is not trivially one value


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    straight = Trainer(make_cfg(), run_dir=tmp_path / 'a', train_set=ToyRain(), progress=False)
    straight.train()
    want = straight.raw_model.state_dict()

    first = Trainer(make_cfg(), run_dir=tmp_path / 'b', train_set=ToyRain(), progress=False)
    first.train(max_steps=1)
    assert first.step == 1 and [s for s, _ in ckpt.list_checkpoints(tmp_path / 'b')] == [1]
    del first
    # A fresh process-like start: the global RNGs are disturbed before resuming.
    torch.manual_seed(12345)
    second = Trainer(make_cfg(), resume=ckpt.find_resume_checkpoint(tmp_path / 'b'),
                     train_set=ToyRain(), progress=False)
    assert second.run_dir == tmp_path / 'b' and second.step == 1
    second.train()
    got = second.raw_model.state_dict()
    # Same ops, same thread count, same data and RNG states: bit-identical, no tolerance needed.
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    a = [(r['step'], r['loss'], r['lr']) for r in csv_rows(tmp_path / 'a' / 'train_log.csv')]
    b = [(r['step'], r['loss'], r['lr']) for r in csv_rows(tmp_path / 'b' / 'train_log.csv')]
    assert a == b and len(a) == 2
    # The last checkpoint carries the optimiser state of an uninterrupted run too.
    sa = torch.load(tmp_path / 'a' / 'ckpt_00000002.pt', weights_only=True)['train_state']
    sb = torch.load(tmp_path / 'b' / 'ckpt_00000002.pt', weights_only=True)['train_state']
    for pa, pb in zip(sa['optimizer']['state'].values(), sb['optimizer']['state'].values()):
        assert torch.equal(pa['exp_avg'], pb['exp_avg']) and torch.equal(pa['exp_avg_sq'], pb['exp_avg_sq'])
    assert sa['scheduler']['last_epoch'] == sb['scheduler']['last_epoch'] == 2
    # The run folder holds what the docs promise.
    for name in ('config.yaml', 'model_final.pt', 'train_log.csv'):
        assert (tmp_path / 'b' / name).is_file()
    final = RainMamba.from_checkpoint(tmp_path / 'b' / 'model_final.pt')
    assert state_hash(final) == state_hash(second.raw_model)


def test_checkpoint_is_atomic_and_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(make_cfg(keep_last=2), run_dir=tmp_path, train_set=ToyRain(), progress=False)
    for step in (1, 2, 3):
        trainer.step = step
        trainer.save_checkpoint()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]  # keep_last=2
    before = (tmp_path / 'ckpt_00000003.pt').read_bytes()

    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):  # write part of the file, then die
        real_save(obj, f, *args, **kwargs)
        with open(f, 'r+b') as fh:
            fh.truncate(100)
        raise OSError('disk full (simulated)')

    monkeypatch.setattr(torch, 'save', crash_midway)
    trainer.step = 4
    with pytest.raises(OSError, match='simulated'):
        trainer.save_checkpoint()
    monkeypatch.setattr(torch, 'save', real_save)
    # No half-written ckpt_00000004.pt, no temporary left behind, older checkpoints untouched.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in ('.pt', '.tmp')) == [
        'ckpt_00000002.pt', 'ckpt_00000003.pt']
    assert (tmp_path / 'ckpt_00000003.pt').read_bytes() == before
    assert ckpt.find_resume_checkpoint(tmp_path).name == 'ckpt_00000003.pt'
    data = ckpt.load_training_checkpoint(tmp_path / 'ckpt_00000003.pt')
    assert data['train_state']['step'] == 3 and data['format'] == 'rainmamba_ros'


def test_ctrl_c_finishes_the_step_and_checkpoints(tmp_path: Path) -> None:
    def press_ctrl_c(trainer: Trainer, step: int) -> None:  # runs after step 1 (eval_interval=1)
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own Ctrl-C handler, whatever this process started with (a background job of a
    # non-interactive shell starts with SIGINT ignored); the original is put back at the end
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        trainer = Trainer(make_cfg(iterations=5, eval_interval=1, ckpt_interval=100),
                          run_dir=tmp_path, train_set=ToyRain(), hooks=[press_ctrl_c], progress=False)
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
        assert trainer.step == 1
        assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    finally:
        signal.signal(signal.SIGINT, previous)


def test_non_finite_loss_stops_with_the_step(tmp_path: Path) -> None:
    trainer = Trainer(make_cfg(), run_dir=tmp_path, train_set=ToyRain(), progress=False)

    def nan_loss(out, gt, lq, step):  # a loss that blew up
        value = (out * float('nan')).mean()
        return value, {'charbonnier': value}

    trainer.criterion = nan_loss
    trainer.step = 7
    batch = {k: v.unsqueeze(0) for k, v in ToyRain()[0].items() if k != 'key'}
    with pytest.raises(TrainError, match='non-finite loss .* at step 7'):
        trainer.train_step(batch)


def test_resume_refuses_weights_only_file(tmp_path: Path) -> None:
    RainMamba(RainMambaConfig.tiny(causal=True)).save_checkpoint(tmp_path / 'weights.pt')
    with pytest.raises(ckpt.CheckpointError, match='model.init_from'):
        Trainer(make_cfg(), run_dir=tmp_path / 'r', resume=tmp_path / 'weights.pt',
                train_set=ToyRain(), progress=False)


def test_distillation_loss_uses_the_teacher(tmp_path: Path) -> None:
    torch.manual_seed(7)
    teacher = RainMamba(RainMambaConfig.tiny(causal=False))  # any mode; here the offline one
    teacher.save_checkpoint(tmp_path / 'teacher.pt')
    cfg = make_cfg()
    cfg.distill.teacher = str(tmp_path / 'teacher.pt')
    cfg.distill.gt_weight, cfg.distill.weight = 1.0, 0.5
    trainer = Trainer(cfg, run_dir=tmp_path / 'run', train_set=ToyRain(), progress=False)
    assert not trainer.teacher.training
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    teacher_before = state_hash(trainer.teacher)

    torch.manual_seed(0)
    batch = {k: v.unsqueeze(0) for k, v in ToyRain()[0].items() if k != 'key'}
    with torch.no_grad():
        student = trainer.raw_model(batch['lq'])
        want_teacher = charbonnier_loss(student, teacher(batch['lq'])).item()
        want_gt = charbonnier_loss(student, batch['gt']).item()
    assert abs(want_teacher - want_gt) > 1e-3  # the two targets are distinguishable
    result = trainer.train_step(batch)
    # Same forwards on the same weights: equal up to float summation order.
    assert result['teacher'] == pytest.approx(want_teacher, rel=1e-5)
    assert result['charbonnier'] == pytest.approx(want_gt, rel=1e-5)
    assert result['loss'] == pytest.approx(want_gt + 0.5 * want_teacher, rel=1e-5)
    assert state_hash(trainer.teacher) == teacher_before  # frozen


def test_cli_trains_on_synthetic_rain(tmp_path: Path, shared) -> None:
    shared.path('data', 'camvid')
    from rainmamba_core.train import cli
    out = tmp_path / 'run'
    rc = cli.main(['--config', 'tiny_cpu', '--out', str(out), '--no-progress',
                   'train.iterations=1', 'train.warmup_iters=0', 'data.crop=32', 'data.frames=2',
                   'data.batch=1', 'data.workers=0', 'data.val_clips=1', 'data.val_crop=32',
                   'train.eval_interval=1', 'train.ckpt_interval=1'])
    assert rc == 0
    written = (out / 'config.yaml').read_text()
    assert 'crop: 32' in written and 'iterations: 1' in written
    val = csv_rows(out / 'val_log.csv')
    assert len(val) == 1 and float(val[0]['val_psnr']) > 0
    assert RainMamba.from_checkpoint(out / 'model_final.pt').config.causal
    # Resuming a finished run is a no-op that still succeeds; unknown keys fail loudly.
    assert cli.main(['--resume', str(out), '--no-progress']) == 0
    assert cli.main(['--config', 'tiny_cpu', 'train.lrr=1', '--out', str(tmp_path / 'x')]) == 2


def test_criterion_with_perceptual_and_dcl_calls_each_loss(tmp_path):
    """Both VGG losses on at once: each term must call its own module (a late-binding lambda
    once made the perceptual term call the DCL module)."""
    from rainmamba_core.train.config import load_config
    from rainmamba_core.train.trainer import Criterion
    from rainmamba_core.train.vgg import save_random_vgg
    v16 = save_random_vgg(tmp_path / 'vgg16.pth', 'vgg16')
    v19 = save_random_vgg(tmp_path / 'vgg19.pth', 'vgg19')
    cfg = load_config('tiny_cpu', ['loss.perceptual=0.3', 'loss.dcl=0.1', f'loss.vgg16_path={v16}',
                                   f'loss.vgg19_path={v19}'])
    crit = Criterion(cfg, torch.device('cpu'))
    torch.manual_seed(0)
    gt = torch.rand(1, 3, 3, 64, 64)
    lq = (gt + 0.3 * torch.rand_like(gt)).clamp(0, 1)
    out = gt + 0.05 * torch.randn_like(gt)
    total, parts = crit(out, gt, lq, step=10)
    assert set(parts) >= {'charbonnier', 'perceptual', 'dcl'}
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())


def test_psnr_loss_term_is_weighted_and_logged(tmp_path: Path) -> None:
    cfg = make_cfg(iterations=2)
    cfg.loss.charbonnier, cfg.loss.psnr = 1.0, 0.01
    trainer = Trainer(cfg, run_dir=tmp_path / 'r', train_set=ToyRain(), progress=False)
    batch = {k: v.unsqueeze(0) for k, v in ToyRain()[0].items() if k != 'key'}
    with torch.no_grad():
        out = trainer.model(batch['lq'])
    total, parts = trainer.criterion(out, batch['gt'], batch['lq'], 0)
    assert set(parts) == {'charbonnier', 'psnr'}
    assert parts['psnr'].item() < 0  # minus a PSNR in dB
    # abs 1e-6: a float32 sum of terms of size ~0.1 (the two terms nearly cancel here, so no rel bound)
    assert total.item() == pytest.approx(parts['charbonnier'].item() + 0.01 * parts['psnr'].item(), abs=1e-6)
    trainer.train()
    rows = csv_rows(tmp_path / 'r' / 'train_log.csv')
    assert float(rows[-1]['psnr']) < 0


def test_a_weight_map_scales_each_pixel_s_pull_towards_its_target(tmp_path: Path) -> None:
    torch.manual_seed(3)
    trainer = Trainer(make_cfg(), run_dir=tmp_path / 'run', train_set=ToyRain(), progress=False)
    batch = {k: v.unsqueeze(0) for k, v in ToyRain()[0].items() if k != 'key'}
    with torch.no_grad():
        out = trainer.raw_model(batch['lq'])
    half = torch.zeros(1, 2, 1, 32, 32)
    half[..., :16] = 1.0                              # the left half counts, the right half not
    want = charbonnier_loss(out, torch.cat([batch['gt'][..., :16], out[..., 16:]], -1)).item()
    assert abs(want - charbonnier_loss(out, batch['gt']).item()) > 1e-3  # the halves matter
    before = state_hash(trainer.raw_model)
    result = trainer.train_step({**batch, 'weight': half})
    assert result['charbonnier'] == pytest.approx(want, rel=1e-5)
    assert state_hash(trainer.raw_model) != before
    # weight 0 everywhere: no pull at all (Adam's first step with a zero gradient moves nothing)
    still = Trainer(make_cfg(), run_dir=tmp_path / 'still', train_set=ToyRain(), progress=False)
    before = state_hash(still.raw_model)
    still.train_step({**batch, 'weight': torch.zeros(1, 2, 1, 32, 32)})
    assert state_hash(still.raw_model) == before


def test_trainable_prefixes_freeze_the_rest_and_typos_are_refused(tmp_path: Path) -> None:
    cfg = make_cfg(iterations=3, trainable=['detail.', 'conv_last.'])
    cfg.model.overrides = {'detail_channels': 8}
    trainer = Trainer(cfg, run_dir=tmp_path / 'run', train_set=ToyRain(), progress=False)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    trainer.train()
    after = trainer.raw_model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved, 'nothing trained'
    assert all(k.startswith(('detail.', 'conv_last.')) for k in moved), sorted(moved)[:5]
    assert any(k.startswith('detail.') for k in moved) and any(k.startswith('conv_last.') for k in moved)
    # a prefix naming no parameter must not silently freeze the whole network
    bad = make_cfg(trainable=['detial.'])
    bad.model.overrides = {'detail_channels': 8}
    with pytest.raises(TrainError, match="'detial.' matches no parameter.*detail\\."):
        Trainer(bad, run_dir=tmp_path / 'bad', train_set=ToyRain(), progress=False)
    with pytest.raises(ConfigError, match='train.trainable'):
        make_cfg(trainable=['']).validate()
