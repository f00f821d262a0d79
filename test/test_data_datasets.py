"""Datasets: shapes, identical augmentation of lq and gt, determinism, held-out split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rainmamba_core.data.clips import builtin_scene, write_image
from rainmamba_core.data.datasets import (
    DatasetError,
    PairedFolderDataset,
    SyntheticRainDataset,
    build_paired_dataset,
    heldout_split,
)


def make_paired(root: Path, seqs: int = 2, frames: int = 6, h: int = 40, w: int = 52) -> None:
    rng = np.random.default_rng(0)
    for s in range(seqs):
        for t in range(frames):
            gt = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            write_image(root / 'gt' / f'{s:03d}' / f'{t:08d}.png', gt)
            write_image(root / 'lq' / f'{s:03d}' / f'{t:08d}.png', 255 - gt)  # a bijection of gt


def test_paired_training_items_share_their_augmentation(tmp_path: Path) -> None:
    make_paired(tmp_path)
    ds = build_paired_dataset(str(tmp_path / 'lq'), str(tmp_path / 'gt'), frames=3, crop=24, train=True)
    assert len(ds) == 2
    for seed in range(6):
        np.random.seed(seed)
        item = ds[seed % 2]
        assert item['lq'].shape == (3, 3, 24, 24) and item['gt'].shape == (3, 3, 24, 24)
        assert item['lq'].dtype == torch.float32
        # any crop/flip/transpose applied to both keeps lq = 1 - gt exactly (inputs were 255 - x)
        assert torch.allclose(item['lq'], 1 - item['gt'], atol=1e-6)  # float rounding of /255


def test_paired_eval_windows_are_fixed(tmp_path: Path) -> None:
    make_paired(tmp_path)
    ds = PairedFolderDataset(tmp_path / 'lq', tmp_path / 'gt', frames=3, crop=None, train=False)
    assert len(ds) == 4  # 2 sequences x 2 non-overlapping windows of 3
    assert torch.equal(ds[1]['gt'], ds[1]['gt']) and ds[1]['gt'].shape == (3, 3, 40, 52)
    whole = PairedFolderDataset(tmp_path / 'lq', tmp_path / 'gt', frames=None, crop=None, train=False)
    assert len(whole) == 2 and whole[0]['lq'].shape[0] == 6


def test_paired_missing_gt_is_named(tmp_path: Path) -> None:
    make_paired(tmp_path)
    (tmp_path / 'lq' / '009').mkdir()
    write_image(tmp_path / 'lq' / '009' / '0.png', np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match='009'):
        PairedFolderDataset(tmp_path / 'lq', tmp_path / 'gt')


def make_stills(root: Path, n: int = 5) -> None:
    for i in range(n):
        write_image(root / f'scene_{i:03d}.png', builtin_scene(72, 96, seed=i))


def test_synthetic_items_shapes_and_determinism(tmp_path: Path) -> None:
    make_stills(tmp_path)
    ds = SyntheticRainDataset([str(tmp_path)], frames=3, crop=32, train=False, seed=1)
    a, b = ds[2], ds[2]
    assert a['lq'].shape == (3, 3, 32, 32) and a['gt'].shape == (3, 3, 32, 32)
    assert a['mask'].shape == (3, 1, 32, 32) and a['streaks'].shape == (3, 1, 32, 32)
    assert torch.equal(a['lq'], b['lq'])  # eval items depend on (seed, index) only
    assert not torch.equal(a['lq'], ds[3]['lq'])
    assert not torch.equal(a['lq'], a['gt'])  # rain was added
    other = SyntheticRainDataset([str(tmp_path)], frames=3, crop=32, train=False, seed=2)
    assert not torch.equal(a['lq'], other[2]['lq'])


def test_synthetic_training_follows_the_global_seed(tmp_path: Path) -> None:
    make_stills(tmp_path)
    ds = SyntheticRainDataset([str(tmp_path)], frames=2, crop=24, train=True)
    np.random.seed(5)
    a = ds[0]
    np.random.seed(5)
    b = ds[0]
    assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])


def test_heldout_split_is_disjoint_stable_and_by_name(tmp_path: Path) -> None:
    files = [tmp_path / f'seq{i}_{k:04d}.png' for i in range(6) for k in range(3)]
    train, held = heldout_split(files, 0.3)
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(files) and held and train
    # the decision is per name: a subset of files gets the same verdicts
    sub_train, sub_held = heldout_split(files[:7], 0.3)
    assert set(sub_held) <= set(held) and set(sub_train) <= set(train)
    # grouping by sequence keeps all frames of a sequence on one side
    _, held_seq = heldout_split(files, 0.3, by='sequence')
    groups = {p.stem.split('_')[0] for p in held_seq}
    assert all(p in held_seq for p in files if p.stem.split('_')[0] in groups)


def test_builtin_scenes_join_training_but_never_the_heldout_split(tmp_path: Path) -> None:
    make_stills(tmp_path, n=6)
    train = SyntheticRainDataset([str(tmp_path)], frames=2, crop=24, train=False, split='train',
                                 builtin_scenes=3)
    plain = SyntheticRainDataset([str(tmp_path)], frames=2, crop=24, train=False, split='train')
    held = SyntheticRainDataset([str(tmp_path)], frames=2, crop=24, train=False, split='heldout',
                                builtin_scenes=3)
    assert train.num_scenes == plain.num_scenes + 3 and len(train) == train.num_scenes
    names = {train.scene_name(i) for i in range(train.num_scenes)}
    assert {'builtin500000', 'builtin500001', 'builtin500002'} <= names
    # the held-out side is the same real scenes with or without built-in ones
    assert held.num_scenes == len(held.files) and all('builtin' not in f.stem for f in held.files)
    item = train[train.num_scenes - 1]  # one built-in scene, rendered like the others
    assert item['key'].startswith('builtin500002/') and item['lq'].shape == (2, 3, 24, 24)
    assert not torch.equal(item['lq'], item['gt'])
    # procedural scenes alone are a valid training set; alone they cannot be held out
    only = SyntheticRainDataset([], frames=2, crop=24, train=False, builtin_scenes=2)
    assert only.num_scenes == 2
    with pytest.raises(DatasetError, match='held-out split never holds built-in'):
        SyntheticRainDataset([], frames=2, crop=24, train=False, split='heldout', builtin_scenes=2)
    with pytest.raises(DatasetError, match='builtin_scenes=-1'):
        SyntheticRainDataset([str(tmp_path)], builtin_scenes=-1)
