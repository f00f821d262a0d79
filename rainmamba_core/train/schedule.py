"""Learning-rate schedule: polynomial decay with linear warm-up, by iteration.

The authors train with MMEditing's ``lr_config = dict(policy='poly', power=1.0, min_lr=1e-9,
warmup='linear', warmup_iters=2000, warmup_ratio=1e-6, by_epoch=False)``. Its meaning, which
this module reproduces for the iteration ``i`` about to run (0-based) out of ``N``:

    regular(i) = (lr - min_lr) * (1 - i / N) ** power + min_lr
    lr(i)      = regular(i) * (1 - (1 - i / W) * (1 - warmup_ratio))   if i < W (warm-up)
               = regular(i)                                           otherwise

so the warm-up ramps linearly from ``warmup_ratio * regular(0)`` towards the decaying curve, and
the decay reaches ``min_lr`` at ``i = N``.
"""
from __future__ import annotations

import torch

from .config import OptimConfig


def lr_at(step: int, cfg: OptimConfig) -> float:
    """Learning rate used by iteration `step` (0-based) under `cfg`."""
    total = cfg.iterations
    progress = min(max(step, 0), total) / total
    regular = (cfg.lr - cfg.min_lr) * (1.0 - progress) ** cfg.power + cfg.min_lr
    if step < cfg.warmup_iters:
        k = (1.0 - step / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
        return regular * (1.0 - k)
    return regular


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose `last_epoch` is the iteration count; call `.step()` after each iteration.

    The optimiser's base lr must equal ``cfg.lr`` (the lambda returns a factor of it).
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, cfg) / cfg.lr)
