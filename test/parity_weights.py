"""Deterministic parity weights from key names (normative definition: shared/spec/parity_weights.md)."""
from __future__ import annotations

import ast
import math
import zlib
from pathlib import Path

import torch


def make_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator(device='cpu')
    g.manual_seed(zlib.crc32(key.encode('utf-8')))

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float32)

    if key.endswith('.A_log') or key.endswith('.A_b_log'):
        base = torch.log(torch.arange(1, shape[1] + 1, dtype=torch.float32))
        return base.expand(shape[0], shape[1]) + randn() * 0.1
    if key.endswith('.D') or key.endswith('.D_b'):
        return randn() * 0.1 + 1.0
    if key.endswith('.dt_proj.bias') or key.endswith('.dt_proj_b.bias'):
        u = torch.rand(shape, generator=g, dtype=torch.float32)
        dt = torch.exp(u * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        return dt + torch.log(-torch.expm1(-dt))
    if key.endswith('.gamma'):
        return randn() * 0.02 + 0.2
    if key.endswith('.weight') and len(shape) == 1:
        return randn() * 0.1 + 1.0
    if key.endswith('.bias'):
        return randn() * 0.05
    if key.endswith('.weight') and len(shape) >= 2:
        return randn() * (1.0 / math.sqrt(math.prod(shape[1:])))
    raise KeyError(key)


def read_keys(keys_file: Path) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in keys_file.read_text().splitlines():
        if line.strip():
            k, s = line.split('\t')
            out.append((k, tuple(ast.literal_eval(s))))
    return out


def parity_state_dict(keys_file: Path) -> dict[str, torch.Tensor]:
    return {k: make_tensor(k, s) for k, s in read_keys(keys_file)}
