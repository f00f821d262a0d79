"""VGG16/VGG19 ``features`` stacks with torchvision's state_dict keys, loaded from a local file.

torchvision is not a dependency, so the convolutional part is rebuilt here layer for layer:
``features.0.weight`` ... match torchvision's ``vgg16``/``vgg19``, and the files torchvision
downloads (``vgg16-397923af.pth``, ``vgg19-dcbb9e9d.pth``) load directly (classifier keys are
ignored). Weights are never downloaded at run time.

Indices in ``features`` (torchvision numbering; ReLUs are not in-place so intermediate outputs
can be kept): VGG16 relu1_2=3, relu2_2=8, relu3_3=15, relu4_3=22, relu5_3=29; VGG19 conv1_1=0,
relu1_1=1, conv1_2=2.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from rainmamba_core.errors import RainMambaError
from rainmamba_core.safe_load import safe_load

# 'M' is a 2x2 max-pool; numbers are conv output channels (torchvision cfgs 'D' and 'E')
CFGS = {
    'vgg16': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
    'vgg19': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
              512, 512, 512, 512, 'M'],
}
WEIGHT_FILES = {'vgg16': 'vgg16-397923af.pth', 'vgg19': 'vgg19-dcbb9e9d.pth'}
WEIGHT_URL = 'https://download.pytorch.org/models/{}'
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsError(RainMambaError, FileNotFoundError):
    """The local VGG weight file is missing or does not hold torchvision's VGG layout."""


def make_features(arch: str, upto: int | None = None) -> nn.Sequential:
    """The ``features`` Sequential of `arch`, truncated after index `upto` (inclusive)."""
    if arch not in CFGS:
        raise VGGWeightsError(f'unknown VGG {arch!r}; expected one of {sorted(CFGS)}')
    layers: list[nn.Module] = []
    cin = 3
    for v in CFGS[arch]:
        if v == 'M':
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
    if upto is not None:
        layers = layers[:upto + 1]
    return nn.Sequential(*layers)


def missing_weights_message(arch: str, path: str | Path | None, what: str) -> str:
    name = WEIGHT_FILES[arch]
    where = f'{path} does not exist' if path else 'no file was given'
    return (f'{what} needs the ImageNet {arch.upper()} weights but {where}. Put torchvision\'s '
            f'{name} on this machine (download {WEIGHT_URL.format(name)} on a machine with '
            f'internet, copy it here, e.g. to ~/.cache/torch/hub/checkpoints/{name}) and give its '
            f'path in the training config (loss.{arch}_path), or set the loss weight to 0.')


class VGGFeatures(nn.Module):
    """Frozen VGG feature extractor returning the outputs at chosen ``features`` indices.

    Args:
        arch: 'vgg16' or 'vgg19'.
        layers: indices of ``features`` whose outputs are returned (in order).
        weights: path to a torchvision state_dict file (required: a loss on random features is
            meaningless, so there is no silent fallback).
        imagenet_norm: normalise [0, 1] RGB inputs with ImageNet mean/std first.
        what: name of the caller for error messages.
    """

    def __init__(self, arch: str, layers: list[int], weights: str | Path | None,
                 imagenet_norm: bool = False, what: str = 'a VGG loss') -> None:
        super().__init__()
        self.arch, self.layers = arch, sorted(layers)
        self.features = make_features(arch, max(self.layers))
        self.imagenet_norm = imagenet_norm
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.load(weights, what)
        self.requires_grad_(False)
        self.eval()

    def load(self, path: str | Path | None, what: str) -> None:
        if not path or not Path(path).is_file():
            raise VGGWeightsError(missing_weights_message(self.arch, path, what))
        state = safe_load(path, VGGWeightsError, f'the {self.arch} weights')
        if isinstance(state, dict) and 'state_dict' in state and isinstance(state['state_dict'], dict):
            state = state['state_dict']
        wanted = self.features.state_dict()
        sub = {}
        for key in wanted:
            full = f'features.{key}'
            if full not in state:
                raise VGGWeightsError(f'{path}: key {full!r} missing; expected torchvision\'s '
                                      f'{self.arch} state_dict ({WEIGHT_FILES[self.arch]})')
            if state[full].shape != wanted[key].shape:
                raise VGGWeightsError(f'{path}: {full} has shape {tuple(state[full].shape)}, '
                                      f'expected {tuple(wanted[key].shape)} for {self.arch}')
            sub[key] = state[full]
        self.features.load_state_dict(sub)

    def train(self, mode: bool = True) -> 'VGGFeatures':
        return super().train(False)  # frozen: always in eval mode

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N, 3, H, W) RGB in [0, 1] -> features at ``layers``."""
        if self.imagenet_norm:
            x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.layers:
                out.append(x)
        return out


def save_random_vgg(path: str | Path, arch: str = 'vgg16', seed: int = 0) -> Path:
    """Write a randomly initialised torchvision-layout ``features`` state_dict (for tests)."""
    torch.manual_seed(seed)
    feats = make_features(arch)
    state = {f'features.{k}': v for k, v in feats.state_dict().items()}
    torch.save(state, str(path))
    return Path(path)
