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


def blind_to_previous(model):
    """A copy of a ``detail_previous`` model whose detail head ignores the previous frame (the first
    conv's weights on those three input channels zeroed): what the head owes to that input."""
    blind = type(model)(model.config).eval()
    blind.load_state_dict(model.state_dict())
    with torch.no_grad():
        blind.detail.body[0].weight[:, -3:] = 0
    return blind
