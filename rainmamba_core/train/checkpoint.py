"""Training checkpoints in the run folder: names, discovery, pruning and RNG-state packing.

A training checkpoint is an ordinary model checkpoint (``RainMamba.save_checkpoint``: format,
version, config, state_dict, written to a temporary file and renamed, so a crash never leaves a
half-written ``ckpt_*.pt``) with one more entry, ``train_state``, holding what exact resume needs:
step, optimizer, scheduler, grad scaler, every rank's RNG states and the sampler position. It is
readable with ``torch.load(weights_only=True)`` (no pickled objects), so
``RainMamba.from_checkpoint`` loads the weights of any training checkpoint directly.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rainmamba_core.errors import RainMambaError
from rainmamba_core.safe_load import safe_load

CKPT_PATTERN = re.compile(r'^ckpt_(\d{8,})\.pt$')


class CheckpointError(RainMambaError, RuntimeError):
    """A training checkpoint is missing, unreadable or lacks the state needed to resume."""


def checkpoint_name(step: int) -> str:
    return f'ckpt_{step:08d}.pt'


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the training checkpoints in `run_dir`, oldest first."""
    found = []
    for path in Path(run_dir).glob('ckpt_*.pt'):
        match = CKPT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_resume_checkpoint(target: str | Path) -> Path:
    """A checkpoint file, or the newest ``ckpt_*.pt`` of a run folder."""
    target = Path(target)
    if target.is_file():
        return target
    if target.is_dir():
        found = list_checkpoints(target)
        if not found:
            raise CheckpointError(f'--resume {target}: the folder holds no ckpt_*.pt training '
                                  'checkpoint; give a run folder written by `rainmamba train` or a file')
        return found[-1][1]
    raise CheckpointError(f'--resume {target}: no such file or folder')


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` training checkpoints; return what was deleted."""
    found = list_checkpoints(run_dir)
    doomed = [path for _, path in found[:-keep_last]] if keep_last > 0 else []
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def pack_rng(state: dict[str, Any]) -> dict[str, Any]:
    """Make RNG states weights_only-loadable (numpy's key array -> tensor)."""
    name, keys, pos, has_gauss, cached = state['numpy']
    packed = dict(state)
    packed['numpy'] = [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                       int(has_gauss), float(cached)]
    packed['python'] = [state['python'][0], list(state['python'][1]), state['python'][2]]
    return packed


def unpack_rng(packed: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`pack_rng`."""
    state = dict(packed)
    name, keys, pos, has_gauss, cached = packed['numpy']
    state['numpy'] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    version, internal, gauss = packed['python']
    state['python'] = (version, tuple(internal), gauss)
    return state


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """The whole checkpoint dict; refuse files without ``train_state`` (weights-only files)."""
    data = safe_load(path, CheckpointError, 'training checkpoint')
    if not isinstance(data, dict) or 'train_state' not in data or 'state_dict' not in data:
        raise CheckpointError(f'{path} is not a training checkpoint (no train_state); to start a new '
                              f'run from its weights use model.init_from={path}')
    return data
