"""One device resolver for every front end: 'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a torch device."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rainmamba_core.errors import RainMambaError

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')


class DeviceError(RainMambaError, RuntimeError):
    """A device that is not a device name, or CUDA asked for on a machine without it."""


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda' and 'cuda:N' as given.

    Raises:
        DeviceError: an unknown name, or a CUDA device on a machine without CUDA.
    """
    import torch
    if not DEVICE_PATTERN.match(str(device)):
        raise DeviceError(f"device '{device}' is not auto, cpu, cuda or cuda:N")
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise DeviceError(f"device '{device}' requested but CUDA is not available "
                          f"(torch {torch.__version__} built {'with' if torch.version.cuda else 'without'} CUDA); "
                          "use device 'cpu' or 'auto'")
    return dev
