"""Resumable distributed sampling: rank slices, resume points, per-sample seeding."""
from __future__ import annotations

import itertools
import random

import numpy as np
import torch

from rainmamba_core.train.checkpoint import pack_rng, unpack_rng
from rainmamba_core.train.sampling import ResumableSampler, SeededDataset, get_rng_state, set_rng_state


def take(sampler: ResumableSampler, n: int) -> list[tuple[int, int]]:
    return list(itertools.islice(iter(sampler), n))


def test_ranks_split_the_single_process_stream() -> None:
    length, batch, steps = 7, 2, 9
    single = take(ResumableSampler(length, batch * 2, seed=5), steps * batch * 2)
    r0 = take(ResumableSampler(length, batch, seed=5, rank=0, world_size=2), steps * batch)
    r1 = take(ResumableSampler(length, batch, seed=5, rank=1, world_size=2), steps * batch)
    merged = []
    for s in range(steps):  # global batch s = rank 0's slice, then rank 1's
        merged += r0[s * batch:(s + 1) * batch] + r1[s * batch:(s + 1) * batch]
    assert merged == single
    # Every pass over the data is a permutation; passes are shuffled differently.
    indices = [i for i, _ in single]
    passes = [indices[k:k + length] for k in range(0, 2 * length, length)]
    assert all(sorted(p) == list(range(length)) for p in passes)
    assert passes[0] != passes[1]
    assert len({s for _, s in single}) == len(single)  # one seed per global position


def test_start_step_resumes_the_stream() -> None:
    full = take(ResumableSampler(11, 3, seed=1, rank=1, world_size=2), 3 * 10)
    resumed = take(ResumableSampler(11, 3, seed=1, rank=1, world_size=2, start_step=4), 3 * 6)
    assert resumed == full[3 * 4:]
    other_seed = take(ResumableSampler(11, 3, seed=2, rank=1, world_size=2), 3 * 10)
    assert other_seed != full


class Draws(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seeded_dataset_is_reproducible_and_leaves_global_rngs_alone() -> None:
    ds = SeededDataset(Draws())
    torch.manual_seed(0)
    before = torch.rand(())
    torch.manual_seed(0)
    a = ds[(1, 123)]
    assert torch.rand(()) == before  # the caller's stream continues as if nothing was drawn
    assert ds[(1, 123)] == a and ds[(2, 123)] == a  # the seed, not the index, drives randomness
    assert ds[(1, 124)] != a


def test_rng_state_round_trips_through_checkpoint_packing() -> None:
    state = unpack_rng(pack_rng(get_rng_state()))
    want = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == want
