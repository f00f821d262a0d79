"""The export scan formulations equal the reference selective scan, with a carried initial state."""
from __future__ import annotations

import pytest
import torch

from rainmamba_core.export.scan import (
    SCAN_FORMULATIONS,
    ExportScanError,
    auto_chunk,
    export_scan,
    linear_recurrence,
    scan_function,
)
from rainmamba_core.ops.selective_scan import selective_scan_ref

# fp32 rounding of cumulative sums and exp over a few hundred tokens stays around 1e-6 relative;
# 1e-5 leaves room for reassociation differences between formulations without hiding a wrong carry.
RTOL = 1e-5


def _inputs(length: int, batch: int = 2, dim: int = 12, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length), A=-4 * torch.rand(dim, n, generator=g),
                B=r(batch, n, length), C=r(batch, n, length), D=r(dim), z=r(batch, dim, length),
                delta_bias=r(dim), delta_softplus=True, initial_state=r(batch, dim, n))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize('formulation', SCAN_FORMULATIONS)
@pytest.mark.parametrize('length,chunk', [(1, 0), (37, 5), (96, 0), (250, 16), (250, 0)])
def test_formulation_equals_reference(formulation: str, length: int, chunk: int) -> None:
    kw = _inputs(length)
    ref, ref_last = selective_scan_ref(**kw, return_last_state=True)
    out, last = scan_function(formulation, chunk)(**kw, return_last_state=True)
    print(formulation, length, chunk, _rel(out, ref), _rel(last, ref_last))
    assert _rel(out, ref) < RTOL and _rel(last, ref_last) < RTOL


def test_blocked_segments_carry_state() -> None:
    kw = _inputs(300)
    ref, ref_last = selective_scan_ref(**kw, return_last_state=True)
    # a budget of 40 tokens per segment forces 8 segments, each starting from the previous one's state
    out, last = scan_function('blocked', 0, segment_elements=2 * 12 * 6 * 40)(**kw, return_last_state=True)
    assert _rel(out, ref) < RTOL and _rel(last, ref_last) < RTOL


def test_linear_recurrence_multi_level_without_h0() -> None:
    g = torch.Generator().manual_seed(1)
    log_a = -torch.rand(1, 3, 1000, 2, generator=g)
    x = torch.randn(1, 3, 1000, 2, generator=g)
    h, states = torch.zeros(1, 3, 2), []
    for t in range(1000):
        h = torch.exp(log_a[:, :, t]) * h + x[:, :, t]
        states.append(h)
    # chunk 8 over 1000 tokens: 125 chunks -> 16 -> 2, three levels of carries
    assert _rel(linear_recurrence(log_a, x, None, 8), torch.stack(states, 2)) < RTOL


def test_auto_chunk_prefers_divisors_near_sqrt() -> None:
    assert auto_chunk(4800) * (4800 // auto_chunk(4800)) == 4800
    assert 4800 ** 0.5 / 2 <= auto_chunk(4800) <= 2 * 4800 ** 0.5
    assert auto_chunk(1) >= 8


def test_bad_choices_are_refused_and_the_scan_choice_is_undone() -> None:
    from rainmamba_core.ops import selective_scan as ss
    with pytest.raises(ExportScanError, match='not one of'):
        scan_function('loop')
    with pytest.raises(ExportScanError, match='chunk'):
        scan_function('blocked', -1)
    before = ss.default_backend()
    with export_scan('blocked'):
        assert callable(ss.default_backend())  # the model's unchanged calls reach the formulation
    assert ss.default_backend() == before
