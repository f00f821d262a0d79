"""One-frame temporal convolutions as 2D convolutions over stacked frames (modules/temporal.py),
pinned to torch's own conv3d / conv_transpose3d on the cache + frame."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rainmamba_core.modules.temporal import step_conv3d, step_conv_transpose3d

# fp32: the stacked 2D conv sums the same products in another order (oneDNN vs the 3D kernel).
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('groups,stride', [(1, 1), (1, 2), (6, 1)])
def test_step_conv3d_equals_conv3d_on_cache_and_frame(groups, stride):
    torch.manual_seed(0)
    cache, frame = torch.randn(2, 6, 2, 9, 11), torch.randn(2, 6, 1, 9, 11)
    weight, bias = torch.randn(12, 6 // groups, 3, 3, 3), torch.randn(12)
    want = F.conv3d(torch.cat([cache, frame], 2), weight, bias, stride=(1, stride, stride), padding=(0, 1, 1),
                    groups=groups)[:, :, 0]
    got, new_cache = step_conv3d(frame[:, :, 0].permute(0, 2, 3, 1), cache, weight, bias, stride=stride, padding=1,
                                 groups=groups)
    assert torch.allclose(got, want, **TOL)
    assert torch.equal(new_cache, torch.cat([cache[:, :, 1:], frame], 2))


def test_step_conv_transpose3d_equals_causal_conv_transpose3d():
    torch.manual_seed(1)
    cache, frame = torch.randn(1, 8, 2, 5, 7), torch.randn(1, 8, 1, 5, 7)
    weight, bias = torch.randn(8, 4, 3, 3, 3), torch.randn(4)
    full = F.conv_transpose3d(torch.cat([cache, frame], 2), weight, bias, stride=(1, 2, 2), padding=(0, 1, 1),
                              output_padding=(0, 1, 1))
    want = full[:, :, 2]  # output frame k-1 sees input frames 0..k-1 (causal_time_apply's slice)
    got, new_cache = step_conv_transpose3d(frame[:, :, 0].permute(0, 2, 3, 1), cache, weight, bias, stride=2,
                                           padding=1, output_padding=1)
    assert torch.allclose(got, want, **TOL)
    assert torch.equal(new_cache, torch.cat([cache[:, :, 1:], frame], 2))


def test_new_cache_is_a_view_and_steps_again():
    # The returned cache is a strided view of the stack (no copy); feeding it back must work.
    cache, frame = torch.zeros(1, 4, 2, 6, 6), torch.randn(1, 6, 6, 4)
    weight = torch.randn(4, 4, 3, 3, 3)
    _, c1 = step_conv3d(frame, cache, weight, None)
    y2, c2 = step_conv3d(frame, c1, weight, None)
    want = F.conv3d(torch.stack([torch.zeros(1, 4, 6, 6), frame.permute(0, 3, 1, 2), frame.permute(0, 3, 1, 2)], 2),
                    weight, padding=(0, 1, 1))[:, :, 0]
    assert torch.allclose(y2, want, **TOL)
    assert c2.shape == (1, 4, 2, 6, 6)


def test_fused_depthwise_step_equals_conv3d_and_carries_cache():
    np = pytest.importorskip('numpy')
    fused_tokens = pytest.importorskip('rainmamba_core.ops.fused_tokens')
    if not fused_tokens.available():
        pytest.skip('numba missing')
    torch.manual_seed(2)
    cache, frame = torch.randn(2, 5, 2, 7, 9), torch.randn(2, 5, 1, 7, 9)
    weight, bias = torch.randn(5, 1, 3, 3, 3), torch.randn(5)
    want = F.conv3d(torch.cat([cache, frame], 2), weight, bias, padding=(0, 1, 1), groups=5)[:, :, 0]
    out, new = np.empty((2, 7, 9, 5), np.float32), np.empty((2, 7, 9, 5, 2), np.float32)
    fused_tokens.dwconv3_step(frame[:, :, 0].permute(0, 2, 3, 1).contiguous().numpy(),
                              cache.permute(0, 3, 4, 1, 2).numpy(), weight[:, 0].contiguous().numpy(), bias.numpy(),
                              out, new)
    assert torch.allclose(torch.from_numpy(out).permute(0, 3, 1, 2), want, **TOL)
    assert torch.equal(torch.from_numpy(new).permute(0, 3, 4, 1, 2), torch.cat([cache[:, :, 1:], frame], 2))
