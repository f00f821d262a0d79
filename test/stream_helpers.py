"""Stepping a causal model through a clip, for the tests that compare it with the whole-clip forward,
and a copy of a model blind to the previous frame its detail head reads."""
from __future__ import annotations

import torch


def step_all(model, clip: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B, T, 3, H, W) clip stepped frame by frame from a fresh state -> (B, T, 3, H, W), last state."""
    state = model.init_state(clip.shape[0], *clip.shape[-2:])
    outs = []
    with torch.no_grad():
        for t in range(clip.shape[1]):
            out, state = model.step(clip[:, t], state)
            outs.append(out)
    return torch.stack(outs, 1), state


def stream_rel_error(model, clip: torch.Tensor) -> float:
    """Relative L2 error of the stepped clip against the whole-clip forward."""
    with torch.no_grad():
        full = model(clip)
    stepped, _ = step_all(model, clip)
    return ((stepped - full).norm() / full.norm()).item()


def assert_streams_carrying(model, frames: int) -> None:
    """Stepping ``model`` through a random clip equals its whole-clip forward (float rounding only:
    DESIGN.md's 1e-5), and its state carries the last ``frames`` input frames, newest first
    (``detail.prev``, ``detail.prev2`` ...)."""
    clip = torch.rand(2, 5, 3, 40, 56)
    keys = ['detail.prev'] + [f'detail.prev{j}' for j in range(2, frames + 1)]
    assert sorted(k for k in model.init_state(2, 40, 56) if k.startswith('detail.')) == keys
    with torch.no_grad():
        full = model(clip)
    stepped, carried = step_all(model, clip)
    assert ((stepped - full).norm() / full.norm()).item() <= 1e-5
    for j, key in enumerate(keys, 1):
        assert torch.equal(carried[key], clip[:, -j]), key


def blind_to_previous(model):
    """A copy of a ``detail_previous`` model whose detail head ignores the previous frame (the first
    conv's weights on those three input channels zeroed): what the head owes to that input."""
    blind = type(model)(model.config).eval()
    blind.load_state_dict(model.state_dict())
    with torch.no_grad():
        blind.detail.body[0].weight[:, -3:] = 0
    return blind
