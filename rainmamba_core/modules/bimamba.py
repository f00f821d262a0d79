"""Bidirectional Mamba mixer ("bimamba v2") in two time semantics.

Glossary: B batch, L tokens, C model channels (d_model), D inner channels (d_inner = expand*C),
N state size (d_state), K depthwise conv width (d_conv), F tokens per frame, T frames.

Both directions share `in_proj` and `out_proj`; the backward direction has its own conv1d_b,
x_proj_b, dt_proj_b, A_b_log and D_b. Outputs of the two directions are summed before out_proj.

* official (frame_len=None): the forward direction scans the whole sequence, the backward
  direction scans the whole sequence flipped (the authors' fast path with bimamba_type="v2").
* causal (frame_len=F): the sequence is T frames of F tokens. The forward direction scans the
  whole stream and its state (conv tail (B, D, K-1) and SSM state (B, D, N)) can be carried in
  from the previous call and out to the next; the backward direction scans each frame on its own,
  flipped, from a zero state, so spatial context stays two-sided while time stays causal.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rainmamba_core.ops import fused_tokens
from rainmamba_core.ops.selective_scan import selective_scan

# (conv tail, ssm state) of the forward direction, or None for a zero start.
MixerState = dict[str, torch.Tensor]


class BiMamba(nn.Module):
    """Bidirectional Mamba mixer; parameter names match the authors' checkpoints.

    `scan_backend` is the selective-scan backend its scans use ('auto' or a name of
    `rainmamba_core.ops.selective_scan.BACKENDS`, or a callable formulation); the model sets it
    on every mixer (`RainMamba.set_scan_backend`).
    """

    scan_backend: str | Callable = 'auto'

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        d, n, r = self.d_inner, d_state, self.dt_rank
        # Parameter registration order follows the authors' state_dict order.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1))
        self.D = nn.Parameter(torch.ones(d))
        self.A_b_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1))
        self.D_b = nn.Parameter(torch.ones(d))
        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        self.conv1d = nn.Conv1d(d, d, kernel_size=d_conv, groups=d, padding=d_conv - 1)
        self.x_proj = nn.Linear(d, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, d)
        self.conv1d_b = nn.Conv1d(d, d, kernel_size=d_conv, groups=d, padding=d_conv - 1)
        self.x_proj_b = nn.Linear(d, r + 2 * n, bias=False)
        self.dt_proj_b = nn.Linear(r, d)
        self.out_proj = nn.Linear(d, d_model, bias=False)
        self._init_dt()

    def _init_dt(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        # Mamba initialisation: softplus(dt_bias) log-uniform in [dt_min, dt_max].
        with torch.no_grad():
            for proj in (self.dt_proj, self.dt_proj_b):
                std = self.dt_rank ** -0.5
                nn.init.uniform_(proj.weight, -std, std)
                dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
                proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> MixerState:
        """Zero state of the forward direction: conv tail (B, D, K-1), ssm (B, D, N)."""
        return {'conv': torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
                'ssm': torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=torch.float32)}

    def _direction(self, x: torch.Tensor, z: torch.Tensor, conv: nn.Conv1d, x_proj: nn.Linear,
                   dt_proj: nn.Linear, A_log: torch.Tensor, D: torch.Tensor,
                   conv_tail: torch.Tensor | None, h0: torch.Tensor | None, want_state: bool):
        """One scan direction. x, z: (B, D, L). Returns y (B, D, L) [, new conv tail, new ssm]."""
        length = x.shape[-1]
        k = self.d_conv
        if conv_tail is None:
            xc = F.conv1d(x, conv.weight, conv.bias, padding=k - 1, groups=self.d_inner)[..., :length]
        else:
            # The carried tail plays the role of the zero padding: identical maths, causal in time.
            xin = torch.cat([conv_tail.to(x.dtype), x], dim=-1)  # (B, D, K-1+L)
            xc = F.conv1d(xin, conv.weight, conv.bias, groups=self.d_inner)
        xc = F.silu(xc)
        x_dbl = x_proj(xc.transpose(1, 2))  # (B, L, R+2N)
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ dt_proj.weight.t()).transpose(1, 2)  # (B, D, L); bias added inside the scan
        A = -torch.exp(A_log.float())
        res = selective_scan(xc, dt, A, Bm.transpose(1, 2), Cm.transpose(1, 2), D.float(), z=z,
                             delta_bias=dt_proj.bias.float(), delta_softplus=True,
                             initial_state=h0, return_last_state=want_state, backend=self.scan_backend)
        if not want_state:
            return res, None, None
        y, last = res
        src = x if conv_tail is None else torch.cat([conv_tail.to(x.dtype), x], dim=-1)
        if src.shape[-1] < k - 1:  # fewer tokens than the tail: left-pad with zeros
            src = F.pad(src, (k - 1 - src.shape[-1], 0))
        return y, src[..., -(k - 1):], last

    def forward(self, hidden: torch.Tensor, frame_len: int | None = None,
                state: MixerState | None = None, return_state: bool = False):
        """Mix tokens.

        Args:
            hidden: (B, L, C).
            frame_len: None for official (whole-sequence) semantics; F for causal semantics
                with L = T*F tokens of T frames.
            state: causal only; the forward direction's carried state (None = zero).
            return_state: causal only; also return the state after the last token.
        Returns:
            out (B, L, C), and the new state when `return_state`.
        """
        batch, length, _ = hidden.shape
        if frame_len is not None and length % frame_len:
            raise ValueError(f'BiMamba: {length} tokens are not whole frames of {frame_len}')
        if frame_len is None and (state is not None or return_state):
            raise ValueError('BiMamba: official (bidirectional over the whole sequence) mode has no '
                             'carried state; pass frame_len for causal mode')
        if token_major_available(hidden, self):
            return self._forward_token_major(hidden, frame_len, state, return_state)
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2D, L)
        x, z = xz.chunk(2, dim=1)
        if frame_len is None:
            y, _, _ = self._direction(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D,
                                      None, None, False)
            yb, _, _ = self._direction(x.flip(-1), z.flip(-1), self.conv1d_b, self.x_proj_b, self.dt_proj_b,
                                       self.A_b_log, self.D_b, None, None, False)
            return self.out_proj((y + yb.flip(-1)).transpose(1, 2))
        frames = length // frame_len
        tail = None if state is None else state['conv']
        h0 = None if state is None else state['ssm']
        y, new_tail, new_h = self._direction(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D,
                                             tail, h0, return_state)
        # Backward direction inside each frame: (B, D, T*F) -> (B*T, D, F), flipped.
        def per_frame(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, frames, frame_len).transpose(1, 2).reshape(batch * frames, -1, frame_len)
        yb, _, _ = self._direction(per_frame(x).flip(-1), per_frame(z).flip(-1), self.conv1d_b, self.x_proj_b,
                                   self.dt_proj_b, self.A_b_log, self.D_b, None, None, False)
        yb = yb.flip(-1).reshape(batch, frames, -1, frame_len).transpose(1, 2).reshape(batch, -1, length)
        out = self.out_proj((y + yb).transpose(1, 2))
        if return_state:
            return out, {'conv': new_tail, 'ssm': new_h}
        return out

    def _forward_token_major(self, hidden: torch.Tensor, frame_len: int | None, state: MixerState | None,
                             return_state: bool):
        """`forward` through the token-major fused kernels (ops/fused_tokens.py): no transposes, no
        flipped copies, both directions summed in one buffer. Inference on the CPU only (see
        `token_major_available`); equal to the reference path within fp32 rounding (tested)."""
        conv_silu, scan = fused_tokens.kernels()[:2]
        batch, length, _ = hidden.shape
        d, k, n, r = self.d_inner, self.d_conv, self.d_state, self.dt_rank
        seg = frame_len or max(length, 1)
        xz = self.in_proj(hidden)  # (B, L, 2D)
        xz_np = xz.numpy()
        x_np, z_np = xz_np[..., :d], xz_np[..., d:]  # strided views
        tail = torch.zeros(batch, d, k - 1) if state is None else state['conv'].float()
        h0 = torch.zeros(batch, d, n) if state is None else state['ssm'].float()
        out = np.empty((batch, length, d), dtype=np.float32)
        last = np.empty((batch, d, n), dtype=np.float32)
        scratch = np.empty((batch, length, d), dtype=np.float32)
        for reverse in (False, True):
            conv, x_proj, dt_proj = ((self.conv1d_b, self.x_proj_b, self.dt_proj_b) if reverse
                                     else (self.conv1d, self.x_proj, self.dt_proj))
            A_log, D = (self.A_b_log, self.D_b) if reverse else (self.A_log, self.D)
            conv_silu(x_np, _np(conv.weight[:, 0]), _np(conv.bias), _np(tail).transpose(0, 2, 1), reverse, seg,
                      scratch)
            xc = torch.from_numpy(scratch)
            x_dbl = F.linear(xc, x_proj.weight)  # (B, L, R+2N)
            dbl = x_dbl.numpy()
            # dt_proj (R -> D, R = 2 or 4) and its bias are applied inside the scan, then softplus
            scan(scratch, _NO_DELTA, dbl[..., :r], _np(dt_proj.weight), _np(dt_proj.bias),
                 _np(-torch.exp(A_log.float())), dbl[..., r:r + n], dbl[..., r + n:],
                 _np(D), z_np, _np(h0) if not reverse else np.zeros((batch, d, n), np.float32),
                 True, reverse, length if not reverse else seg, reverse, out, last if not reverse else
                 np.empty((batch, d, n), np.float32))
            if not reverse and return_state:
                new_h = torch.from_numpy(last.copy())
                src = x_np[:, -(k - 1):] if length >= k - 1 else np.concatenate(
                    [_np(tail).transpose(0, 2, 1), x_np], axis=1)[:, -(k - 1):]
                new_tail = torch.from_numpy(np.ascontiguousarray(src.transpose(0, 2, 1))).to(xz.dtype)
        y = self.out_proj(torch.from_numpy(out).to(hidden.dtype))
        if return_state:
            return y, {'conv': new_tail, 'ssm': new_h}
        return y


_NO_DELTA = np.zeros((1, 1, 1), np.float32)  # `scan`'s full delta, unused when dt_proj runs inside it


def _np(t: torch.Tensor) -> np.ndarray:
    """Contiguous fp32 numpy array of a tensor (parameters included), sharing memory when it can."""
    return t.detach().float().contiguous().numpy()


def fused_inference_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The fused CPU kernels may replace PyTorch ops here: fp32 CPU tensors, no gradient wanted,
    not tracing for export, numba importable."""
    if x.device.type != 'cpu' or x.dtype != torch.float32 or not fused_tokens.available():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    return not (torch.jit.is_tracing() or torch.jit.is_scripting())


def token_major_available(hidden: torch.Tensor, module: nn.Module) -> bool:
    """True when the mixer may run through the token-major fused kernels: CPU fp32 inference (no
    gradient wanted, not tracing for export), numba importable, and the mixer's scan backend is
    'auto' or 'fused' (an explicit 'ref'/'chunked'/... or an export formulation keeps the
    reference path, which is what those choices are for)."""
    if not fused_inference_ok(hidden, module.in_proj.weight):
        return False
    backend = getattr(module, 'scan_backend', 'auto')
    return isinstance(backend, str) and backend in ('auto', 'fused')
