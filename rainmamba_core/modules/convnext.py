"""ConvNeXt feature encoder and projection head (written here; no mmcv/timm).

State-dict names follow the authors' checkpoints (`feat_extract.*`, `head.lateral_convs.*`),
which used MMClassification's ConvNeXt with `linear_pw_conv=True` and `gap_before_final_norm=False`.

Glossary: N images (batch x frames), C channels, H x W spatial size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an (N, C, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv -> LN -> Linear -> GELU -> Linear -> layer scale, residual."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0, layer_scale: float = 1.0):
        super().__init__()
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels, eps=1e-6)
        hidden = int(mlp_ratio * channels)
        self.pointwise_conv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(hidden, channels)
        self.gamma = nn.Parameter(layer_scale * torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W), ideally channels-last
        y = self.depthwise_conv(x).permute(0, 2, 3, 1)  # (N, H, W, C), a free view when channels-last
        y = F.layer_norm(y, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        y = self.pointwise_conv2(self.act(self.pointwise_conv1(y)))
        y = (y * self.gamma).permute(0, 3, 1, 2)
        return x + y


class ConvNeXt(nn.Module):
    """ConvNeXt returning the normalised output of every stage (strides 4, 8, 16, 32).

    Args:
        depths: blocks per stage (tiny: 3, 3, 9, 3).
        channels: channels per stage (tiny: 96, 192, 384, 768).
    """

    def __init__(self, depths: Sequence[int] = (3, 3, 9, 3), channels: Sequence[int] = (96, 192, 384, 768),
                 in_channels: int = 3, layer_scale: float = 1.0):
        super().__init__()
        if len(depths) != len(channels):
            raise ValueError(f'ConvNeXt: depths {tuple(depths)} and channels {tuple(channels)} differ in length')
        self.channels = tuple(channels)
        # The stem's LayerNorm uses eps=1e-6; the downsampling LayerNorms use PyTorch's default 1e-5
        # (the authors' code builds them without an eps argument). Both matter for parity.
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=4, stride=4), LayerNorm2d(channels[0], eps=1e-6))])
        for i in range(1, len(channels)):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(channels[i - 1]), nn.Conv2d(channels[i - 1], channels[i], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(c, layer_scale=layer_scale) for _ in range(d)])
            for d, c in zip(depths, channels))
        for i, c in enumerate(channels):
            self.add_module(f'norm{i}', LayerNorm2d(c, eps=1e-6))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x: (N, 3, H, W)
        outs = []
        for i, (down, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = stage(down(x))
            outs.append(getattr(self, f'norm{i}')(x))
        return outs


class _LateralConv(nn.Module):
    """1x1 conv wrapped like mmcv's ConvModule so the key is `lateral_convs.i.conv.*`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ProjectionHead(nn.Module):
    """Projects each encoder stage to `out_channels` with a 1x1 conv."""

    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.lateral_convs = nn.ModuleList(_LateralConv(c, out_channels) for c in in_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.lateral_convs):
            raise ValueError(f'ProjectionHead: got {len(feats)} feature maps, expected {len(self.lateral_convs)}')
        return [conv(f) for conv, f in zip(self.lateral_convs, feats)]
