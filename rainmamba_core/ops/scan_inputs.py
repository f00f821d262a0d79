"""Input handling shared by every selective-scan formulation (backends, export, benchmarks).

Glossary: B batch, D channels (d_inner), L tokens, N state size, G groups of B/C.

Public so that other formulations (`rainmamba_core.export.scan`, the fused kernels) take their
inputs exactly as the reference does: the same shape checks, the same discretisation, the same
D skip and silu(z) gate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rainmamba_core.errors import RainMambaError


class SelectiveScanError(RainMambaError, RuntimeError):
    """A scan backend cannot run with the given inputs or is not available."""


def discretisation_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None,
                         delta_softplus: bool) -> torch.Tensor:
    """fp32 step sizes dt: (B, D, L) = softplus?(delta + bias)."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def grouped(M: torch.Tensor, batch: int, dim: int, length: int, name: str) -> torch.Tensor:
    """Bring B or C into fp32 (B, G, N, L).

    Accepts (B, N, L), (B, G, N, L) with D % G == 0, or a constant (D, N) (expanded as a view to
    (B, D, N, L), i.e. one group per channel).
    """
    M = M.float()
    if M.dim() == 2:
        if M.shape[0] != dim:
            raise SelectiveScanError(f'{name} has shape {tuple(M.shape)}; a constant {name} must be (D={dim}, N)')
        return M[None, :, :, None].expand(batch, dim, M.shape[1], length)
    if M.dim() == 3:
        M = M[:, None]
    if M.dim() != 4 or M.shape[0] != batch or M.shape[-1] != length or dim % M.shape[1]:
        raise SelectiveScanError(
            f'{name} has shape {tuple(M.shape)}; expected (B={batch}, N, L={length}) or (B, G, N, L) with '
            f'D={dim} divisible by G, or a constant (D, N)')
    return M


def check_shapes(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                  initial_state: torch.Tensor | None) -> tuple[int, int, int, int]:
    if u.dim() != 3 or delta.shape != u.shape:
        raise SelectiveScanError(f'u {tuple(u.shape)} and delta {tuple(delta.shape)} must both be (B, D, L)')
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise SelectiveScanError(f'A has shape {tuple(A.shape)}; expected (D={dim}, N)')
    if A.is_complex():
        raise SelectiveScanError('complex A is not supported; pass a real (D, N) A')
    n = A.shape[1]
    if initial_state is not None and tuple(initial_state.shape) != (batch, dim, n):
        raise SelectiveScanError(f'initial_state has shape {tuple(initial_state.shape)}; expected '
                                 f'(B={batch}, D={dim}, N={n})')
    return batch, dim, length, n


def per_channel(M: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, G, N, L) -> (B, D, N, L) as a broadcastable view (no copy when G == 1 or G == D)."""
    groups = M.shape[1]
    if groups == 1 or groups == dim:
        return M
    return M.repeat_interleave(dim // groups, dim=1)


def finish(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
           dtype: torch.dtype) -> torch.Tensor:
    """out = (y + D*u) * silu(z), computed in fp32 and cast to the input dtype."""
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)
