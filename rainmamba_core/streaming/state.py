"""Stream-state helpers. A stream state is a flat dict {name: tensor} whose first axis is the batch.

Functional: every helper returns new tensors and leaves its inputs untouched, so a state can be
kept, compared, exported to ONNX or moved between devices (``{k: v.to(device)}``) freely.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

State = dict[str, torch.Tensor]


def cat_states(states: Sequence[State]) -> State:
    """Concatenate per-stream states along the batch axis (streams of equal frame size)."""
    if not states:
        raise ValueError('cat_states needs at least one state')
    return {k: torch.cat([s[k] for s in states], dim=0) for k in states[0]}


def split_state(state: State, sizes: Sequence[int] | None = None) -> list[State]:
    """Inverse of cat_states: split along the batch axis (default: one per element)."""
    batch = next(iter(state.values())).shape[0]
    sizes = list(sizes) if sizes is not None else [1] * batch
    parts = {k: torch.split(v, sizes, dim=0) for k, v in state.items()}
    return [{k: parts[k][i] for k in state} for i in range(len(sizes))]


def reset_batch(state: State, mask: torch.Tensor | Sequence[bool]) -> State:
    """Zero the state of the batch elements where mask is True (others untouched)."""
    first = next(iter(state.values()))
    keep = (~torch.as_tensor(mask, dtype=torch.bool, device=first.device)).view(-1)
    if keep.numel() != first.shape[0]:
        raise ValueError(f'reset mask has {keep.numel()} entries for a batch of {first.shape[0]}')
    return {k: v * keep.view(-1, *([1] * (v.dim() - 1))).to(v.dtype) for k, v in state.items()}


def state_is_finite(state: State) -> torch.Tensor:
    """(B,) bool: True where every tensor of that batch element is finite."""
    first = next(iter(state.values()))
    ok = torch.ones(first.shape[0], dtype=torch.bool, device=first.device)
    for v in state.values():
        # isfinite first: step's caches are strided views, and flattening them would copy every
        # state tensor each frame (flattening the bool result copies a quarter of that at most)
        ok &= torch.isfinite(v).flatten(1).all(dim=1)
    return ok
