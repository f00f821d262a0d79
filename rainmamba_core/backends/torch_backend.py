"""PyTorch inference backend: a RainMamba model on CPU or CUDA behind the Backend interface."""
from __future__ import annotations

import logging

import numpy as np
import torch

from rainmamba_core.devices import DeviceError, resolve_device
from rainmamba_core.errors import RainMambaError
from rainmamba_core.models.rainmamba import RainMamba
from rainmamba_core.streaming.state import cat_states, split_state, state_is_finite

log = logging.getLogger(__name__)

_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class BackendError(RainMambaError, RuntimeError):
    """The backend cannot run as configured."""


def to_tensor(frames: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return (t.movedim(-1, -3).to(dtype) / 255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) float -> (..., H, W, 3) uint8 (clamped, rounded)."""
    return (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


class TorchBackend:
    """RainMamba in PyTorch. Causal models step; any model runs windowed clips."""

    name = 'torch'

    def __init__(self, model: RainMamba, device: str = 'auto', precision: str = 'fp32'):
        if precision not in _DTYPES:
            raise BackendError(f"precision '{precision}' is not one of {sorted(_DTYPES)}")
        try:
            self.torch_device = resolve_device(device)
        except DeviceError as exc:
            raise BackendError(str(exc)) from exc
        if precision != 'fp32' and self.torch_device.type != 'cuda':
            raise BackendError(f"precision '{precision}' needs a CUDA device (got {self.torch_device}); "
                               'use fp32 on CPU')
        self.dtype = _DTYPES[precision]
        self.model = model.to(self.torch_device, self.dtype).eval()
        self.device = str(self.torch_device)
        self.streaming = bool(model.config.causal)
        self.window = int(model.config.window)

    def new_state(self, height: int, width: int):
        return self.model.init_state(1, height, width, device=self.torch_device, dtype=self.dtype)

    @torch.inference_mode()
    def step(self, frames: np.ndarray, states: list) -> tuple[np.ndarray, list, list[bool]]:
        x = to_tensor(frames, self.torch_device, self.dtype)  # (B, 3, H, W)
        # One stream (the common case): no concatenation or split copies of the state.
        out, new = self.model.step(x, states[0] if len(states) == 1 else cat_states(states))
        finite = state_is_finite(new) & torch.isfinite(out).flatten(1).all(1)
        return to_uint8(out), [new] if len(states) == 1 else split_state(new), [bool(v) for v in finite.cpu()]

    @torch.inference_mode()
    def run_clip(self, clips: np.ndarray) -> np.ndarray:
        x = to_tensor(clips, self.torch_device, self.dtype)  # (B, T, 3, H, W)
        return to_uint8(self.model(x)[:, -1])
