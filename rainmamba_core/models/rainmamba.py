"""RainMamba video deraining network (Wu et al., ACM MM 2024) in official and causal modes.

Glossary: B batch, T frames, C channels, H x W input size, h x w = H/4 x W/4 feature size.

One set of modules serves three uses:
* official (config.causal=False): the published network, state_dict-compatible with the
  authors' checkpoints; needs whole clips (3D convs look one frame ahead).
* causal (config.causal=True), whole clip: `model(clip)`, output t depends on frames <= t only.
* streaming: `model.step(frame, state) -> (out, new_state)`, one frame at a time with the SSM
  state, conv tails and temporal-conv caches carried; equal to the causal whole-clip forward.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from rainmamba_core.errors import RainMambaError
from rainmamba_core.models.config import RainMambaConfig
from rainmamba_core.modules.bimamba import BiMamba
from rainmamba_core.modules.blocks import MambaLayer
from rainmamba_core.modules.convnext import ConvNeXt, ProjectionHead
from rainmamba_core.modules.detail import DetailHead
from rainmamba_core.modules.temporal import causal_time_apply, step_conv3d, step_conv_transpose3d
from rainmamba_core.ops.align import agreed_difference, novelty_clamp, thin_brightening
from rainmamba_core.ops.hilbert import authors_curve_to_raster, hilbert2d_order, hilbert3d_raster_order, inverse_order
from rainmamba_core.ops.selective_scan import BACKENDS, SelectiveScanError
from rainmamba_core.paths import DEFAULT_MODEL
from rainmamba_core.safe_load import safe_load

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 'rainmamba_ros'
CHECKPOINT_VERSION = 1
State = dict[str, torch.Tensor]


class CheckpointError(RainMambaError, RuntimeError):
    """A checkpoint cannot be read or does not match the model."""


MIN_SIZE = 32  # the encoder's last stage has stride 32
# detail_align: the aligned difference enters the head times this. Its weights start at zero next
# to a trained head, and Adam moves every weight by about the learning rate a step, so the gain
# lets them change the output as fast as a weight 8x their size would (measured: at gain 1 they
# reached a mean of 0.0036 in 1,500 steps, against 0.057 on the frame's channels).
ALIGN_GAIN = 8.0


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Size the network runs at: up to a multiple of `multiple`, and at least MIN_SIZE."""
    return (max(MIN_SIZE, math.ceil(height / multiple) * multiple),
            max(MIN_SIZE, math.ceil(width / multiple) * multiple))


def _mirror_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the last two dims of x to `padded_size` by mirroring the last rows/columns (the
    authors' full-frame test padding); replicate where the image is smaller than the pad."""
    height, width = x.shape[-2:]
    th, tw = padded_size(height, width, multiple)
    ph, pw = th - height, tw - width
    if ph:
        x = torch.cat([x, x[..., -ph:, :].flip(-2)], -2) if ph <= height else F.pad(
            x.flatten(0, -3), (0, 0, 0, ph), mode='replicate').view(*x.shape[:-2], th, width)
    if pw:
        x = torch.cat([x, x[..., -pw:].flip(-1)], -1) if pw <= width else F.pad(
            x.flatten(0, -3), (0, pw), mode='replicate').view(*x.shape[:-1], tw)
    return x


class RainMamba(nn.Module):
    """RainMamba generator. `model(clip)` maps (B, T, 3, H, W) in [0, 1] to the same shape."""

    def __init__(self, config: RainMambaConfig | None = None, scan_backend: str | Callable = 'auto'):
        super().__init__()
        self.config = cfg = config or RainMambaConfig.official()
        nf = cfg.num_features
        self.feat_extract = ConvNeXt(cfg.encoder_depths, cfg.encoder_channels)
        self.head = ProjectionHead(cfg.encoder_channels, nf)
        self.refine = nn.Sequential(
            nn.Conv2d(nf, nf, 3, padding=1), nn.SELU(), nn.Conv2d(nf, nf, 3, padding=1), nn.SELU(),
            nn.Conv2d(nf, nf, 1))
        self.conv1 = nn.Conv3d(nf, 2 * nf, 3, stride=(1, 2, 2), padding=1)
        self.upconv2 = nn.ConvTranspose3d(2 * nf, nf, 3, stride=(1, 2, 2), padding=1, output_padding=(0, 1, 1))
        dc = cfg.decoder_channels
        self.conv_before_upsample1 = nn.Conv3d(nf, dc, (1, 3, 3), padding=(0, 1, 1))
        self.upsample1 = nn.PixelShuffle(2)
        self.conv_before_upsample2 = nn.Conv3d(dc // 4, dc // 2, (1, 3, 3), padding=(0, 1, 1))
        self.upsample2 = nn.PixelShuffle(2)
        self.conv_last = nn.Conv3d(dc // 8, 3, (1, 3, 3), padding=(0, 1, 1))
        # The stride-4 stem sees a 4x4 patch through encoder_channels[0] values, so thin streaks
        # blur out of the features; the detail head looks at the input frame itself at full resolution.
        # With detail_previous it also sees the previous input frame: a thin line there in both
        # frames (within the head's 7x7 reach) is scene, one there only now is likely rain.
        self.detail = (DetailHead(dc // 8, cfg.detail_channels, previous=cfg.detail_previous,
                                  context=cfg.detail_context)
                       if cfg.detail_channels else None)

        def pair(name: str, dim: int) -> list[str]:
            kw = dict(d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, mlp_ratio=cfg.mlp_ratio)
            self.add_module(f'Global{name}', MambaLayer(dim, local=False, **kw))
            self.add_module(f'Local{name}', MambaLayer(dim, local=True, **kw))
            return [f'Global{name}', f'Local{name}']

        self.stage_high1 = [n for i in range(cfg.blocks_high1) for n in pair(f'MambaBlock{i + 1}', nf)]
        self.stage_low = [n for i in range(cfg.blocks_low) for n in pair(f'MambaBlockLowRes{i + 1}', 2 * nf)]
        self.stage_high2 = [n for i in range(cfg.blocks_high2)
                            for n in pair(f'MambaBlock{cfg.blocks_high1 + i + 1}', nf)]
        self.set_scan_backend(scan_backend)

    @property
    def scan_backend(self) -> str | Callable:
        """The selective-scan backend of every mixer ('auto' unless set)."""
        return self._scan_backend

    def set_scan_backend(self, backend: str | Callable) -> 'RainMamba':
        """Choose the selective-scan backend the model's mixers use: 'auto' (default: CUDA kernel,
        else the fused CPU kernels, else the reference; logged once), a name of
        `rainmamba_core.ops.selective_scan.BACKENDS`, or a callable with `selective_scan_ref`'s
        signature (the ONNX export's formulations). Returns the model."""
        if not callable(backend) and backend not in BACKENDS:
            raise SelectiveScanError(f"unknown selective-scan backend '{backend}'; expected one of "
                                     f"{', '.join(BACKENDS)}")
        self._scan_backend = backend
        for module in self.modules():
            if isinstance(module, BiMamba):
                module.scan_backend = backend
        return self

    # ------------------------------------------------------------------ building blocks
    def _encode(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, T, C, H/4, W/4) fused multi-scale features."""
        batch, frames = clip.shape[:2]
        # Channels-last from the stem on: every LayerNorm and Linear of the encoder then works on
        # contiguous (N, H, W, C) views, and its output reaches the Mamba layers' token layout
        # (B, T*h*w, C) without a copy.
        feats = self.head(self.feat_extract(clip.flatten(0, 1).contiguous(memory_format=torch.channels_last)))
        size = feats[0].shape[-2:]
        f = feats[0]
        for g in feats[1:]:
            f = f + F.interpolate(g, size=size, mode='bilinear', align_corners=True)
        f = f / len(feats)
        f = self.refine(f) + f
        return f.view(batch, frames, *f.shape[1:])

    def _decode(self, x: torch.Tensor, frames: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T, h, w) features, (B, T, 3, 4h, 4w) padded input -> (B, T, 3, 4h, 4w); per frame.

        prev: (B, T, 3, 4h, 4w) the frame before each (detail_previous models only)."""
        # The (1, 3, 3) conv3ds are per-frame 2D convs: conv2d on (B*T, C, h, w), a view for T = 1.
        # Channels-last from here on: oneDNN's NHWC kernels and pixel_shuffle are faster on it.
        batch, _, count = x.shape[:3]
        x = x.transpose(1, 2).flatten(0, 1).contiguous(memory_format=torch.channels_last)  # (B*T, C, h, w)

        def conv2d(conv: nn.Conv3d, v: torch.Tensor) -> torch.Tensor:
            return F.conv2d(v, conv.weight[:, :, 0], conv.bias, padding=1)

        x = self.upsample1(conv2d(self.conv_before_upsample1, x))
        x = self.upsample2(conv2d(self.conv_before_upsample2, x))
        if self.detail is None or torch.jit.is_tracing():  # ONNX export: the graph keeps both convs
            out = conv2d(self.conv_last, x).contiguous().view(batch, count, 3, *x.shape[-2:])
            return out if self.detail is None else out + self.detail(x.view(batch, count, *x.shape[1:]), frames,
                                                                      prev=prev)
        # conv_last (C -> 3) rides in the detail head's first conv over [x, frame] (3 more outputs)
        # instead of a second pass over x by a 3-output conv, which oneDNN runs slowly.
        return self.detail(x.view(batch, count, *x.shape[1:]), frames,
                           side=(self.conv_last.weight[:, :, 0], self.conv_last.bias), prev=prev)

    def _down(self, x: torch.Tensor, causal: bool, cache, want_cache: bool):
        """(B, T, C, h, w) -> (B, T, 2C, h/2, w/2)."""
        if causal and x.shape[1] == 1:  # one frame: stacked 2D conv, channels-last (modules/temporal.py)
            conv = self.conv1
            cache = cache if cache is not None else x.new_zeros(x.shape[0], x.shape[2], 2, *x.shape[-2:])
            y, new = step_conv3d(x[:, 0].permute(0, 2, 3, 1), cache, conv.weight, conv.bias, stride=2, padding=1)
            return F.relu(y)[:, None], (new if want_cache else None)
        v = x.transpose(1, 2)
        if not causal:
            return F.relu(self.conv1(v)).transpose(1, 2), None
        conv = self.conv1
        res = causal_time_apply(v, cache, 3, lambda t: F.conv3d(t, conv.weight, conv.bias, stride=(1, 2, 2),
                                                                 padding=(0, 1, 1)), want_cache=want_cache)
        y, new = res if want_cache else (res, None)
        return F.relu(y).transpose(1, 2), new

    def _up(self, x: torch.Tensor, causal: bool, cache, want_cache: bool):
        """(B, T, 2C, h/2, w/2) -> (B, C, T, h, w)."""
        up = self.upconv2
        if causal and x.shape[1] == 1:
            cache = cache if cache is not None else x.new_zeros(x.shape[0], x.shape[2], 2, *x.shape[-2:])
            y, new = step_conv_transpose3d(x[:, 0].permute(0, 2, 3, 1), cache, up.weight, up.bias, stride=2,
                                           padding=1, output_padding=1)
            return F.relu(y)[:, :, None], (new if want_cache else None)
        v = x.transpose(1, 2)
        if not causal:
            return F.relu(self.upconv2(v)), None
        res = causal_time_apply(
            v, cache, 3, lambda t: F.conv_transpose3d(t, up.weight, up.bias, stride=(1, 2, 2), padding=(0, 1, 1),
                                                      output_padding=(0, 1, 1)),
            transposed=True, want_cache=want_cache)
        y, new = res if want_cache else (res, None)
        return F.relu(y), new

    def _orders(self, h: int, w: int, frames: int, curves=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scan orders for the local layers at 1/4 and 1/8 resolution."""
        h, w, frames = int(h), int(w), int(frames)  # traced (ONNX) sizes arrive as tensors
        if self.config.causal:
            return hilbert2d_order(h, w), hilbert2d_order(h // 2, w // 2)
        if curves is not None:
            large, small = curves
            return (authors_curve_to_raster(large, h, w, frames),
                    authors_curve_to_raster(small, h // 2, w // 2, frames))
        return hilbert3d_raster_order(h, w, frames), hilbert3d_raster_order(h // 2, w // 2, frames)

    # ------------------------------------------------------------------ forward / step
    def _run(self, clip: torch.Tensor, state: State | None, return_state: bool, curves=None):
        causal = self.config.causal
        if clip.dim() != 5 or clip.shape[2] != 3:
            raise ValueError(f'RainMamba expects a clip (B, T, 3, H, W), got shape {tuple(clip.shape)}')
        height, width = clip.shape[-2:]
        x = _mirror_pad(clip, self.config.pad_multiple)
        frames = x.shape[1]
        f = self._encode(x)  # (B, T, C, h, w)
        h, w = f.shape[-2:]
        dev = f.device
        large, small = (o.to(dev) for o in self._orders(h, w, frames, curves))
        new_state: State = {}

        def layers(names: list[str], v: torch.Tensor, scan: torch.Tensor) -> torch.Tensor:
            for name in names:
                layer = getattr(self, name)
                order = scan if layer.local else None
                if not causal:
                    v = layer(v, order)
                    continue
                sub = None if state is None else {k[len(name) + 1:]: t for k, t in state.items()
                                                  if k.startswith(name + '.')}
                res = layer(v, order, causal=True, state=sub, return_state=return_state,
                            inverse=None if order is None else inverse_order(order))
                if return_state:
                    v, s = res
                    new_state.update({f'{name}.{k}': t for k, t in s.items()})
                else:
                    v = res
            return v

        def cache(key: str):
            return None if state is None else state[key]

        f = layers(self.stage_high1, f, large)
        f, c1 = self._down(f, causal, cache('conv1.cache'), return_state)
        f = layers(self.stage_low, f, small)
        g, c2 = self._up(f, causal, cache('upconv2.cache'), return_state)
        g = layers(self.stage_high2, g.transpose(1, 2), large).transpose(1, 2)
        prev = None
        earlier: list[torch.Tensor] = []
        valid: list[torch.Tensor] = []
        if self.config.detail_previous:  # the frames before each; before the first, the carried ones
            k = self._carried_frames()
            carried = ([cache('detail.prev')] + [cache(f'detail.prev{j}') for j in range(2, k + 1)]
                       if state is not None else [x.new_zeros(x.shape[0], *x.shape[2:])] * k)
            history = torch.cat([c[:, None] for c in reversed(carried)] + [x], dim=1)  # oldest first
            frames = x.shape[1]
            prev = history[:, k - 1:k - 1 + frames]
            if self.config.detail_align:  # earlier frames moved onto each frame, minus the frame
                # a stream's first frames have none (an all-black carried frame counts as none too)
                there = torch.cat([torch.stack([c.flatten(1).abs().amax(1) > 0 for c in reversed(carried)], 1),
                                   torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)], dim=1)
                earlier = [history[:, k - j:k - j + frames].flatten(0, 1) for j in range(1, k + 1)]
                valid = [there[:, k - j:k - j + frames].flatten() for j in range(1, k + 1)]
                n = self.config.detail_align_frames
                prev = agreed_difference(x.flatten(0, 1), earlier[:n], valid[:n], self.config.detail_align_tiles)
                if self.config.detail_align_thin:
                    prev = thin_brightening(prev, self.config.detail_align_thin)
                prev = prev.view_as(x) * ALIGN_GAIN
            if return_state:
                new_state['detail.prev'] = history[:, -1]
                for j in range(2, k + 1):
                    new_state[f'detail.prev{j}'] = history[:, -j]
        out = self._decode(g, x, prev)[..., :height, :width]
        if self.config.residual_output:
            out = out + clip
        if self.config.novelty_clamp and not self.training:  # an inference guard (model card (49))
            n = self.config.novelty_clamp_frames
            crop = [e[..., :height, :width] for e in earlier[:n]]
            out = novelty_clamp(clip.flatten(0, 1), out.flatten(0, 1), crop, valid[:n],
                                self.config.novelty_clamp, self.config.novelty_clamp_fade).view_as(out)
        if return_state:
            new_state['conv1.cache'] = c1
            new_state['upconv2.cache'] = c2
            return out, new_state
        return out

    def forward(self, clip: torch.Tensor, curves: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Derain a clip.

        Args:
            clip: (B, T, 3, H, W) in [0, 1].
            curves: official mode only: the authors' precomputed (large, small) 3D Hilbert curves
                for the 1/4 and 1/8 feature grids; generated for the actual size when None.
        Returns:
            (B, T, 3, H, W).
        """
        if curves is not None and self.config.causal:
            raise ValueError('3D Hilbert curves apply to official mode only; causal mode scans 2D curves per frame')
        return self._run(clip, None, False, curves)

    def init_state(self, batch: int, height: int, width: int, device=None, dtype=torch.float32) -> State:
        """Zero stream state for frames of size height x width (causal models only).

        The state is a flat dict of named tensors (each tensor movable with `.to()`, exportable).
        """
        if not self.config.causal:
            raise ValueError('init_state/step need a causal model (RainMambaConfig(causal=True)); official '
                             'checkpoints run in windowed mode')
        h, w = (v // 4 for v in padded_size(height, width, self.config.pad_multiple))
        device = device if device is not None else next(self.parameters()).device
        state: State = {}
        for names, (hh, ww) in ((self.stage_high1 + self.stage_high2, (h, w)), (self.stage_low, (h // 2, w // 2))):
            for name in names:
                for k, t in getattr(self, name).init_state(batch, hh, ww, device, dtype).items():
                    state[f'{name}.{k}'] = t
        nf = self.config.num_features
        state['conv1.cache'] = torch.zeros(batch, nf, 2, h, w, device=device, dtype=dtype)
        state['upconv2.cache'] = torch.zeros(batch, 2 * nf, 2, h // 2, w // 2, device=device, dtype=dtype)
        if self.config.detail_previous:  # the previous (padded) input frame; zero before the first
            state['detail.prev'] = torch.zeros(batch, 3, 4 * h, 4 * w, device=device, dtype=dtype)
            for j in range(2, self._carried_frames() + 1):
                state[f'detail.prev{j}'] = torch.zeros(batch, 3, 4 * h, 4 * w, device=device, dtype=dtype)
        return state

    def _carried_frames(self) -> int:
        """How many earlier input frames the state carries (detail_previous models): those the detail
        head aligns, and those the novelty clamp compares with."""
        cfg = self.config
        if not cfg.detail_align:
            return 1
        return max(cfg.detail_align_frames, cfg.novelty_clamp_frames if cfg.novelty_clamp else 1)

    def step(self, frames: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Derain one frame per stream, carrying the state. Does not modify `state`.

        Args:
            frames: (B, 3, H, W) in [0, 1].
            state: from `init_state(B, H, W)` or a previous `step`.
        Returns:
            out (B, 3, H, W), new state.
        """
        if frames.dim() != 4:
            raise ValueError(f'step expects frames (B, 3, H, W), got shape {tuple(frames.shape)}')
        expected = self.init_state_shapes(frames.shape[0], frames.shape[-2], frames.shape[-1])
        if set(state) != set(expected):
            raise ValueError('stream state does not belong to this model: missing '
                             f'{sorted(set(expected) - set(state))[:5]}, '
                             f'unexpected {sorted(set(state) - set(expected))[:5]}')
        bad = [k for k, s in expected.items() if tuple(state[k].shape) != s]
        if bad:
            raise ValueError(f'stream state was made for another batch or frame size: {bad[0]} has shape '
                             f'{tuple(state[bad[0]].shape)}, expected {expected[bad[0]]}; call init_state again')
        out, new = self._run(frames[:, None], state, True)
        return out[:, 0], new

    @functools.lru_cache(maxsize=32)  # noqa: B019 - a handful of (batch, size) keys per model
    def init_state_shapes(self, batch: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.init_state(batch, height, width, device='meta').items()}

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        """Write {'format', 'version', 'config', 'state_dict', **extra} atomically."""
        path = Path(path)
        payload = {'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION, 'config': self.config.to_dict(),
                   'state_dict': {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        payload.update(extra or {})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.tmp')
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, config: RainMambaConfig | None = None,
                        map_location: str | torch.device = 'cpu', scan_backend: str = 'auto') -> 'RainMamba':
        """Load our checkpoints (config stored inside) or the authors' MMEditing checkpoints.

        Loading is strict: missing, unexpected or mis-shaped keys are refused with all of them listed.
        `scan_backend` is the model's selective-scan backend (see `set_scan_backend`).
        """
        state_dict, stored_config = read_checkpoint(path, map_location)
        cfg = config or stored_config or RainMambaConfig.official()
        model = cls(cfg, scan_backend=scan_backend)
        model.load_state_dict_strict(state_dict, source=str(path))
        return model.to(map_location) if str(map_location) != 'cpu' else model

    def load_state_dict_strict(self, state_dict: dict[str, torch.Tensor], source: str = 'state_dict') -> None:
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mis_shaped = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                      for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or mis_shaped:
            def block(title: str, items: list[str]) -> str:
                return f'\n  {title} ({len(items)}): ' + ', '.join(items[:20]) + (' ...' if len(items) > 20 else '')
            msg = f'checkpoint {source} does not match RainMamba({_config_summary(self.config)}):'
            if missing:
                msg += block('missing keys', missing)
            if unexpected:
                msg += block('unexpected keys', unexpected)
            if mis_shaped:
                msg += block('mis-shaped keys', mis_shaped)
            raise CheckpointError(msg + '\n  Check that the checkpoint was made for this preset/config.')
        self.load_state_dict(state_dict, strict=True)


def _config_summary(cfg: RainMambaConfig) -> str:
    return (f'num_features={cfg.num_features}, encoder_channels={cfg.encoder_channels}, '
            f'blocks=({cfg.blocks_high1},{cfg.blocks_low},{cfg.blocks_high2}), causal={cfg.causal}'
            + (f', detail_channels={cfg.detail_channels}' if cfg.detail_channels else '')
            + (', detail_previous=True' if cfg.detail_previous else '')
            + (', detail_align=True' if cfg.detail_align else '')
            + (f', detail_align_frames={cfg.detail_align_frames}' if cfg.detail_align_frames > 1 else '')
            + (f', detail_align_thin={cfg.detail_align_thin}' if cfg.detail_align_thin else '')
            + (f', detail_align_tiles={cfg.detail_align_tiles}' if cfg.detail_align_tiles else '')
            + (f', detail_context={cfg.detail_context}' if cfg.detail_context else ''))


def read_checkpoint(path: str | os.PathLike, map_location='cpu') -> tuple[dict[str, torch.Tensor],
                                                                        RainMambaConfig | None]:
    """Read a checkpoint safely (weights_only) and return (generator state_dict, stored config or None)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist (expected a .pt/.pth file)')
    data = safe_load(path, CheckpointError, 'checkpoint', 'a complete .pt/.pth torch.save file', map_location)
    if not isinstance(data, dict):
        raise CheckpointError(f'checkpoint {path} holds a {type(data).__name__}, expected a dict')
    if data.get('format') == CHECKPOINT_FORMAT:
        if 'state_dict' not in data or 'config' not in data:
            raise CheckpointError(f'checkpoint {path} is a {CHECKPOINT_FORMAT} file without state_dict/config')
        return data['state_dict'], RainMambaConfig.from_dict(data['config'])
    sd = data.get('state_dict', data)
    if not isinstance(sd, dict):
        raise CheckpointError(f'checkpoint {path}: state_dict is a {type(sd).__name__}, expected a dict')
    if any(k.startswith('generator.') for k in sd):
        # The authors' MMEditing checkpoint: keep the generator, ignore loss networks, step_counter, etc.
        ignored = sorted(k for k in sd if not k.startswith('generator.'))
        if ignored:
            log.debug('ignoring %d non-generator entries of %s: %s', len(ignored), path, ', '.join(ignored[:20]))
        sd = {k[len('generator.'):]: v for k, v in sd.items() if k.startswith('generator.')}
    return {k: v for k, v in sd.items()}, None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_default_model() -> RainMamba:
    """The bundled default model, or with a warning an untrained tiny one when its file is missing.

    The untrained stand-in is seeded (the same weights every call, so hashes and caches keyed by
    them stay stable); its output is not derained, which the warning says.
    """
    if DEFAULT_MODEL.is_file():
        return RainMamba.from_checkpoint(DEFAULT_MODEL)
    log.warning('bundled default model %s is missing: using an UNTRAINED tiny model (output will not be '
                'derained); reinstall the package or give a checkpoint', DEFAULT_MODEL)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return RainMamba(RainMambaConfig.tiny())
