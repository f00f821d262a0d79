"""Global and local Mamba layers with their MLP, in official and causal semantics.

Glossary: B batch, T frames, C channels, H x W feature size, L = T*H*W tokens, P = H*W tokens
per frame, Hd hidden MLP channels.

Token layout everywhere: (B, L, C) in (T, H, W) raster order, i.e. frame-major.

* Global layer: the Bi-Mamba mixer scans the raster order (official: over the whole clip in both
  directions; causal: forward over the stream, backward within each frame).
* Local layer, official: the whole layer (mixer, residuals and MLP) runs on tokens reordered by a
  3D generalized-Hilbert curve over (H, W, T) with T fastest, and the MLP's depthwise 3D conv
  reshapes those Hilbert-ordered tokens as if they were (T, H, W) -- the authors' quirk, kept for
  checkpoint compatibility. Causal: only the mixer sees the per-frame 2D Hilbert order; the
  residual and the MLP run in raster order, so the depthwise conv sees true neighbours.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rainmamba_core.modules.bimamba import BiMamba, fused_inference_ok
from rainmamba_core.modules.temporal import causal_time_apply, step_conv3d
from rainmamba_core.ops import fused_tokens

State = dict[str, torch.Tensor]


class DWConv(nn.Module):
    """Depthwise 3x3x3 conv applied to a token sequence reshaped as (T, H, W)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv3d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, frames: int, height: int, width: int, causal: bool,
                cache: torch.Tensor | None = None, want_cache: bool = False):
        batch, _, channels = x.shape
        if causal and frames == 1:
            # One frame: a 2D conv over the cached frames stacked as channels, channels-last, so the
            # tokens go in and come out without a layout copy (modules/temporal.py).
            if cache is None:
                cache = x.new_zeros(batch, channels, 2, height, width)
            if fused_inference_ok(x, self.dwconv.weight):  # one numba pass: conv + cache update
                out = np.empty((batch, height, width, channels), dtype=np.float32)
                new = np.empty((batch, height, width, channels, 2), dtype=np.float32)
                fused_tokens.dwconv3_step(x.view(batch, height, width, channels).numpy(),
                                          cache.permute(0, 3, 4, 1, 2).numpy(),
                                          self.dwconv.weight.detach()[:, 0].contiguous().numpy(),
                                          self.dwconv.bias.detach().numpy(), out, new)
                new_cache = torch.from_numpy(new).permute(0, 3, 4, 1, 2)  # (B, Hd, 2, H, W) view
                return torch.from_numpy(out).view(batch, height * width, channels), (new_cache if want_cache else None)
            y, new_cache = step_conv3d(x.view(batch, height, width, channels), cache, self.dwconv.weight,
                                       self.dwconv.bias, padding=1, groups=channels)
            y = y.permute(0, 2, 3, 1).reshape(batch, height * width, channels)  # (B, L, Hd), free
            return y, (new_cache if want_cache else None)
        v = x.transpose(1, 2).reshape(batch, channels, frames, height, width)
        if not causal:
            y, new_cache = self.dwconv(v), None
        else:
            w, b = self.dwconv.weight, self.dwconv.bias
            res = causal_time_apply(v, cache, 3, lambda t: F.conv3d(t, w, b, padding=(0, 1, 1), groups=channels),
                                    want_cache=want_cache)
            y, new_cache = res if want_cache else (res, None)
        y = y.flatten(2).transpose(1, 2)  # (B, L, Hd)
        return y, new_cache


class Mlp(nn.Module):
    """fc1 -> depthwise 3D conv -> GELU -> fc2 (names as in the authors' checkpoints)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, frames, height, width, causal, cache=None, want_cache=False):
        y, new_cache = self.dwconv(self.fc1(x), frames, height, width, causal, cache, want_cache)
        return self.fc2(self.act(y)), new_cache


class MambaLayer(nn.Module):
    """LayerNorm -> Bi-Mamba -> residual -> LayerNorm -> MLP -> residual.

    Args:
        dim: channels C.
        local: True for the Hilbert-scanned local layer, False for the raster global layer.
    """

    def __init__(self, dim: int, local: bool, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.dim = dim
        self.local = local
        self.norm1 = nn.LayerNorm(dim)
        self.mamba = BiMamba(dim, d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm2 = nn.LayerNorm(dim)
        self.hidden = int(dim * mlp_ratio)
        self.mlp = Mlp(dim, self.hidden)

    def init_state(self, batch: int, height: int, width: int, device=None, dtype=torch.float32) -> State:
        state = {f'mamba.{k}': v for k, v in self.mamba.init_state(batch, device, dtype).items()}
        state['mlp.cache'] = torch.zeros(batch, self.hidden, 2, height, width, device=device, dtype=dtype)
        return state

    def forward(self, x: torch.Tensor, order: torch.Tensor | None = None, causal: bool = False,
                state: State | None = None, return_state: bool = False, inverse: torch.Tensor | None = None):
        """Run the layer.

        Args:
            x: (B, T, C, H, W).
            order: local layers only. Official: (L,) raster index of each 3D-Hilbert position.
                Causal: (P,) raster index (within a frame) of each 2D-Hilbert position.
            causal: causal semantics (state may be carried in and out).
            state: causal only; this layer's state (None = zeros).
            return_state: causal only; also return the new state.
            inverse: causal local layers, optional: argsort(order), so the mixer's output goes
                back to raster order by a gather (faster than the scatter used without it).
        Returns:
            (B, T, C, H, W) [, new state].
        """
        batch, frames, channels, height, width = x.shape
        if channels != self.dim:
            raise ValueError(f'MambaLayer expects {self.dim} channels, got {channels}')
        tokens = x.permute(0, 1, 3, 4, 2).reshape(batch, frames * height * width, channels)  # (B, L, C)
        if self.local and order is None:
            raise ValueError('local MambaLayer needs a Hilbert scan order')
        if not causal:
            if self.local:
                tokens = tokens[:, order]  # whole layer in 3D-Hilbert order (authors' semantics)
            tokens = tokens + self.mamba(self.norm1(tokens))
            y, _ = self.mlp(self.norm2(tokens), frames, height, width, causal=False)
            tokens = tokens + y
            if self.local:
                tokens = torch.empty_like(tokens).index_copy_(1, order, tokens)  # back to raster
            out = tokens.reshape(batch, frames, height, width, channels).permute(0, 1, 4, 2, 3)
            return out
        pixels = height * width
        mstate = None if state is None else {'conv': state['mamba.conv'], 'ssm': state['mamba.ssm']}
        h = self.norm1(tokens)
        if self.local:
            h = h.reshape(batch, frames, pixels, channels)[:, :, order].reshape(batch, -1, channels)
        res = self.mamba(h, frame_len=pixels, state=mstate, return_state=return_state)
        m, new_m = res if return_state else (res, None)
        if self.local:
            m = m.reshape(batch, frames, pixels, channels)
            m = (m[:, :, inverse] if inverse is not None else
                 torch.empty_like(m).index_copy_(2, order, m)).reshape(batch, -1, channels)
        tokens = tokens + m
        cache = None if state is None else state['mlp.cache']
        y, new_cache = self.mlp(self.norm2(tokens), frames, height, width, causal=True, cache=cache,
                                want_cache=return_state)
        tokens = tokens + y
        out = tokens.reshape(batch, frames, height, width, channels).permute(0, 1, 4, 2, 3)
        if return_state:
            return out, {'mamba.conv': new_m['conv'], 'mamba.ssm': new_m['ssm'], 'mlp.cache': new_cache}
        return out
