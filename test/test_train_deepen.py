"""Growing a trained model's Mamba stages (``model.init_from`` with more layer pairs): the added
pairs start as identities, so the output is unchanged until they are trained, and they do train."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rainmamba_core.models.rainmamba import CheckpointError, RainMamba, RainMambaConfig
from rainmamba_core.train.config import config_from_dict
from rainmamba_core.train.errors import TrainError
from rainmamba_core.train.trainer import build_model


def _cfg(init_from: Path, **overrides: int) -> object:
    return config_from_dict({
        'model': {'preset': 'tiny', 'causal': True, 'init_from': str(init_from), 'overrides': overrides},
        'data': {'kind': 'synthetic', 'clean_roots': ['unused'], 'frames': 2, 'crop': 32, 'batch': 1},
        'train': {'device': 'cpu'}})


def test_deepening_keeps_the_output_and_the_added_pairs_train(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = RainMamba(RainMambaConfig.tiny()).eval()
    source.save_checkpoint(tmp_path / 'shallow.pt')
    deep = build_model(_cfg(tmp_path / 'shallow.pt', blocks_high1=2, blocks_low=2, blocks_high2=3)).eval()
    names = {k.split('.')[0] for k in deep.state_dict() if 'MambaBlock' in k}
    # 2 + 2 + 3 pairs, the high-resolution ones numbered on through both high-resolution stages
    assert names == {f'{g}MambaBlock{i}' for g in ('Global', 'Local') for i in range(1, 6)} | \
        {f'{g}MambaBlockLowRes{i}' for g in ('Global', 'Local') for i in (1, 2)}
    # the trained pair after the low-resolution stage (MambaBlock2) is now the third high pair
    assert torch.equal(deep.state_dict()['LocalMambaBlock3.mamba.in_proj.weight'],
                       source.state_dict()['LocalMambaBlock2.mamba.in_proj.weight'])
    clip = torch.rand(1, 2, 3, 16, 24)
    with torch.no_grad():
        before = source(clip)
        # the added layers add exact zeros to the residual stream: the same output to the last bit
        assert torch.equal(deep(clip), before)
        # and an added layer is not a no-op by construction: with a nonzero out_proj it changes the output
        layer = deep.GlobalMambaBlockLowRes2
        saved = layer.mamba.out_proj.weight.clone()
        torch.nn.init.normal_(layer.mamba.out_proj.weight, std=0.1)
        assert (deep(clip) - before).abs().max() > 1e-4
        layer.mamba.out_proj.weight.copy_(saved)
    # The added layers learn: their last projections get gradients at the first step, their inner
    # weights (read through those projections) from the second.
    opt = torch.optim.SGD(deep.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        (deep(clip) - clip.flip(-1)).abs().mean().backward()
        for name in ('GlobalMambaBlock2', 'LocalMambaBlockLowRes2', 'LocalMambaBlock5'):
            layer = getattr(deep, name)
            assert layer.mamba.out_proj.weight.grad.abs().sum() > 0
            assert layer.mlp.fc2.weight.grad.abs().sum() > 0
            assert (layer.mamba.in_proj.weight.grad.abs().sum() > 0) == (step == 1)
        opt.step()


def test_a_deeper_source_is_refused_with_the_keys(tmp_path: Path) -> None:
    RainMamba(RainMambaConfig.tiny(blocks_low=2)).save_checkpoint(tmp_path / 'deep.pt')
    with pytest.raises(CheckpointError, match='LowRes2'):  # the strict load lists the extra keys
        build_model(_cfg(tmp_path / 'deep.pt'))
    # deeper in one stage, shallower in another: neither growing nor a plain load
    with pytest.raises(TrainError, match='deeper than model.overrides'):
        build_model(_cfg(tmp_path / 'deep.pt', blocks_high1=2))
