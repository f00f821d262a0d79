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
