"""Resumable, distributed, per-sample-seeded sampling for iteration-based training.

Exact resume needs the data stream to be a pure function of (seed, step), not of how many worker
processes or restarts there were. So:

* the stream of *global positions* g = 0, 1, 2, ... is cut into global batches of
  ``batch * world_size``; rank r takes the r-th slice of ``batch`` positions of each global batch;
* position g maps to dataset index ``perm_e[g % N]`` with ``e = g // N`` and ``perm_e`` a
  permutation seeded by (seed, e) (a fresh shuffle per pass);
* each sample gets its own RNG seed derived from (seed, g), and :class:`SeededDataset` seeds
  python/numpy/torch with it before calling the wrapped dataset, so random crops, flips and
  synthetic rain are reproducible whatever worker draws them.

Resuming at step s simply starts the sampler at global position ``s * batch * world_size``.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

_MASK64 = (1 << 63) - 1


def sample_seed(seed: int, position: int) -> int:
    """A well-mixed 63-bit seed for global stream position `position` (SplitMix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & _MASK64


class ResumableSampler(Sampler):
    """Infinite sampler yielding ``(index, sample_seed)`` for one rank, starting at a step.

    Args:
        length: dataset length N.
        batch: samples per step on this rank.
        seed: run seed (same on every rank).
        rank, world_size: this process's slice of each global batch.
        start_step: first step to produce (resume point).
        shuffle: a new permutation per pass over the data; False: 0..N-1 in order.
    """

    def __init__(self, length: int, batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, shuffle: bool = True) -> None:
        if length < 1:
            raise ValueError('ResumableSampler: the dataset is empty; check the data folders')
        self.length, self.batch, self.seed = length, batch, seed
        self.rank, self.world_size = rank, world_size
        self.start_step, self.shuffle = start_step, shuffle
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.length)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(sample_seed(self.seed, -1 - epoch))
            self._perm = torch.randperm(self.length, generator=gen).tolist()
            self._perm_epoch = epoch
        return self._perm[offset]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            base = (step * self.world_size + self.rank) * self.batch
            for g in range(base, base + self.batch):
                yield self._index(g), sample_seed(self.seed, g)
            step += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs it for len(loader)
        return 2 ** 62


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


class SeededDataset(Dataset):
    """Wrap a dataset so item ``(index, seed)`` is drawn with all global RNGs seeded by `seed`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        # Worker processes share nothing with the main process; restoring their RNG afterwards
        # is unnecessary, but the main process (workers=0) must not be disturbed.
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            seed_everything(seed)
            return self.dataset[index]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


def get_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU (and CUDA when present) for checkpoints."""
    state: dict[str, Any] = {
        'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
