"""Temporal convolutions that are causal in time and can step with a cache of past frames.

A kernel of temporal size k normally pads (k-1)//2 frames on both sides, so output t sees frame
t+1. The causal version instead prepends k-1 past frames (zeros at a stream start, the cached
frames when stepping) and uses no temporal padding, so output t sees frames t-k+1 .. t only.
Whole-clip forward and frame-by-frame stepping run the same code: the cache *is* the padding.

Glossary: B batch, C channels, T frames, H x W spatial size.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def causal_time_apply(x: torch.Tensor, cache: torch.Tensor | None, k: int,
                      fn: Callable[[torch.Tensor], torch.Tensor], transposed: bool = False,
                      want_cache: bool = False):
    """Apply a stride-1-in-time conv `fn` causally.

    Args:
        x: (B, C, T, H, W) new frames.
        cache: (B, C, k-1, H, W) the previous k-1 input frames, or None for zeros.
        k: temporal kernel size.
        fn: the convolution with temporal padding 0 (spatial padding unchanged).
        transposed: `fn` is a transposed conv (output has T + 2(k-1) frames before slicing).
        want_cache: also return the new cache (the last k-1 input frames).
    Returns:
        y: (B, C', T, H', W') [, new cache (B, C, k-1, H, W)].
    """
    frames = x.shape[2]
    if cache is None:
        cache = x.new_zeros(x.shape[0], x.shape[1], k - 1, x.shape[3], x.shape[4])
    xin = torch.cat([cache.to(x.dtype), x], dim=2)  # (B, C, k-1+T, H, W)
    y = fn(xin)
    if transposed:
        # out[t'] = sum_j w[j] * xin[t'-j]; output frame t (input frame t at t' = t + k - 1)
        # sees xin[t+k-1-j] for j = 0..k-1, i.e. input frames t-k+1 .. t.
        y = y[:, :, k - 1:k - 1 + frames]
    if want_cache:
        return y, xin[:, :, -(k - 1):]
    return y


# ------------------------------------------------------------------------------------------ one step
# Stepping one frame (T = 1) needs only output frame 0, which sees the k-1 cached frames and the
# new one: a temporal convolution over them is ONE 2D convolution over the frames stacked as
# channels. The stack is built channels-last, (B, H, W, C, k) with the frame axis fastest, so
# input channel c*k + j is frame j of channel c; that is exactly how a contiguous 3D weight
# (Cout, Cin, k, kh, kw) reshapes (a view) to (Cout, Cin*k, kh, kw). Channels-last input keeps the
# convolution in oneDNN's NHWC kernels and lets the token tensors (B, H*W, C) of the Mamba layers
# flow in and out without layout copies. The new cache is a view of the stack's last k-1 frames.

def stack_frames(cache: torch.Tensor, frame_cl: torch.Tensor) -> torch.Tensor:
    """(B, C, k-1, H, W) cache (any strides) + (B, H, W, C) new frame -> (B, H, W, C, k) contiguous."""
    return torch.cat([cache.to(frame_cl.dtype).permute(0, 3, 4, 1, 2), frame_cl[..., None]], dim=-1)


def stack_as_nchw(stack: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C, k) -> (B, C*k, H, W) channels-last view (no copy)."""
    batch, height, width = stack.shape[:3]
    return stack.view(batch, height, width, -1).permute(0, 3, 1, 2)


def cache_from_stack(stack: torch.Tensor) -> torch.Tensor:
    """The new cache, (B, C, k-1, H, W): a view of the stack's last k-1 frames."""
    return stack[..., 1:].permute(0, 3, 4, 1, 2)


def step_conv3d(frame_cl: torch.Tensor, cache: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: int = 1, padding: int = 1, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One causal step of a conv3d with temporal kernel k, temporal stride 1, no temporal padding.

    Args:
        frame_cl: (B, H, W, C) the new input frame, channels last.
        cache: (B, C, k-1, H, W) the previous k-1 input frames.
        weight: (Cout, C/groups, k, kh, kw) conv3d weight; bias: (Cout,).
    Returns:
        y (B, Cout, H', W') channels-last, new cache (B, C, k-1, H, W).
    """
    stack = stack_frames(cache, frame_cl)
    w2d = weight.reshape(weight.shape[0], -1, *weight.shape[3:])  # (Cout, C/groups*k, kh, kw)
    y = F.conv2d(stack_as_nchw(stack), w2d, bias, stride=stride, padding=padding, groups=groups)
    return y, cache_from_stack(stack)


def step_conv_transpose3d(frame_cl: torch.Tensor, cache: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None, stride: int, padding: int,
                          output_padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One causal step of a conv_transpose3d (temporal kernel k, stride 1, no temporal padding).

    Output frame 0 (frame k-1 of the full transposed output, see `causal_time_apply`) is
    sum_j w[:, :, j] applied to input frame k-1-j: a conv_transpose2d over the stacked frames
    with the weight's time axis reversed, (Cin, Cout, k, kh, kw) -> (Cin*k, Cout, kh, kw).

    Args:
        frame_cl: (B, H, W, Cin); cache: (B, Cin, k-1, H, W); weight: (Cin, Cout, k, kh, kw).
    Returns:
        y (B, Cout, H', W'), new cache.
    """
    stack = stack_frames(cache, frame_cl)
    cin, cout = weight.shape[:2]
    w2d = weight.flip(2).permute(0, 2, 1, 3, 4).reshape(cin * weight.shape[2], cout, *weight.shape[3:])
    y = F.conv_transpose2d(stack_as_nchw(stack), w2d, bias, stride=stride, padding=padding,
                           output_padding=output_padding)
    return y, cache_from_stack(stack)
