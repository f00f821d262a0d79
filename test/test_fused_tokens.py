"""Token-major fused mixer kernels (ops/fused_tokens.py) against independent references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rainmamba_core.modules.bimamba import BiMamba, token_major_available

pytest.importorskip('numba')

from rainmamba_core.ops import fused_tokens  # noqa: E402


def test_polynomial_exp_matches_numpy():
    x = np.concatenate([-np.logspace(-8, np.log10(87), 20000, dtype=np.float32), np.float32([0.0, -0.5])])
    got = fused_tokens.kernels()[2](x)
    want = np.exp(x.astype(np.float64))
    rel = np.abs(got - want) / want
    print(f'max rel error {rel.max():.2e}')
    # A few fp32 ulps: the polynomial is the Cephes expf one; 1e-6 is far below the model's 1e-5 bar.
    assert rel.max() < 1e-6
    # Underflow: arguments below -87 clamp to exp(-87) ~ 1.6e-38 instead of 0 (a difference far
    # below fp32 resolution of anything it multiplies).
    assert fused_tokens.kernels()[2](np.float32([-200.0]))[0] < 2e-38


def test_polynomial_softplus_matches_torch():
    x = np.concatenate([np.linspace(-30, 30, 20001, dtype=np.float32), np.float32([-100.0, 19.99, 20.01, 80.0])])
    got = fused_tokens.kernels()[3](x)
    want = torch.nn.functional.softplus(torch.from_numpy(x).double()).numpy()
    rel = np.abs(got - want) / np.maximum(want, 1e-30)
    print(f'max rel error {rel.max():.2e}')
    assert rel.max() < 1e-6  # a few fp32 ulps, as the exp above


def _mixer(seed: int = 0, d_model: int = 16, d_state: int = 8) -> BiMamba:
    torch.manual_seed(seed)
    m = BiMamba(d_model, d_state=d_state).eval()
    with torch.no_grad():  # a trained-looking A and D (not the constant init) so every term matters
        m.A_log.add_(0.3 * torch.randn_like(m.A_log))
        m.A_b_log.add_(0.3 * torch.randn_like(m.A_b_log))
        m.D.add_(torch.randn_like(m.D))
        m.D_b.add_(torch.randn_like(m.D_b))
    return m


@pytest.mark.parametrize('frames,frame_len', [(1, 37), (3, 20), (2, 2)])
def test_causal_mixer_equals_reference_path(frames, frame_len):
    m = _mixer()
    x = torch.randn(2, frames * frame_len, 16)
    state = {'conv': torch.randn(2, m.d_inner, m.d_conv - 1), 'ssm': torch.randn(2, m.d_inner, m.d_state)}
    with torch.no_grad():
        assert token_major_available(x, m)
        fast, fast_state = m(x, frame_len=frame_len, state=state, return_state=True)
        m.scan_backend = 'ref'  # the transposing reference path with the plain PyTorch scan
        assert not token_major_available(x, m)
        ref, ref_state = m(x, frame_len=frame_len, state=state, return_state=True)
    rel = ((fast - ref).norm() / ref.norm()).item()
    print(f'T={frames} F={frame_len}: rel {rel:.2e}')
    # fp32: the kernels sum in a different order and use a polynomial exp (rel. 2e-7 per exp).
    assert rel < 1e-5
    for k in ('conv', 'ssm'):
        assert torch.allclose(fast_state[k], ref_state[k], rtol=1e-5, atol=1e-5), k


def test_official_mixer_equals_reference_path():
    m = _mixer(1)
    x = torch.randn(1, 50, 16)
    with torch.no_grad():
        fast = m(x)
        m.scan_backend = 'ref'
        ref = m(x)
    assert ((fast - ref).norm() / ref.norm()).item() < 1e-5


def test_training_keeps_the_differentiable_path():
    m = _mixer().train()
    x = torch.randn(1, 12, 16, requires_grad=True)
    assert not token_major_available(x, m)
    m(x, frame_len=12).sum().backward()
    assert x.grad is not None


def _scan_inputs(length: int, batch: int = 2, dim: int = 20, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length) - 1, A=-4 * torch.rand(dim, n, generator=g),
                B=r(batch, n, length), C=r(batch, n, length), D=r(dim), z=r(batch, dim, length),
                delta_bias=r(dim), initial_state=r(batch, dim, n))


def test_token_major_scan_equals_reference_with_h0():
    from rainmamba_core.ops.selective_scan import selective_scan_ref
    kw = _scan_inputs(77)  # 20 channels: one full block of 16 and a partial one
    want, want_last = selective_scan_ref(**kw, delta_softplus=True, return_last_state=True)
    got, last = fused_tokens.scan_channel_major(**kw)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(last, want_last, rtol=1e-5, atol=1e-5)


def test_token_major_reverse_segments_equal_flipped_reference():
    from rainmamba_core.ops.selective_scan import selective_scan_ref
    kw = _scan_inputs(3 * 10)
    got, _ = fused_tokens.scan_channel_major(**{**kw, 'initial_state': None}, reverse=True, seg=10)
    for f in range(3):  # each segment of 10 tokens scanned backwards from a zero state
        part = {k: (v[..., f * 10:(f + 1) * 10].flip(-1) if k in ('u', 'delta', 'B', 'C', 'z') else v)
                for k, v in kw.items() if k != 'initial_state'}
        want = selective_scan_ref(**part, delta_softplus=True).flip(-1)
        assert torch.allclose(got[..., f * 10:(f + 1) * 10], want, rtol=1e-5, atol=1e-5)


def test_scan_applies_the_low_rank_dt_projection_itself():
    # The mixer passes dt_proj's input (B, L, R), weight (D, R) and bias instead of the (B, L, D)
    # delta; the kernel must compute (sum_j dtl_j w_dj) + b_d as the full-delta call would get it.
    scan = fused_tokens.kernels()[1]
    rng = np.random.default_rng(3)
    b, L, d, n, r = 2, 45, 20, 8, 2
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    u, z, Bm, Cm, dtl = f(b, L, d), f(b, L, d), f(b, L, n), f(b, L, n), f(b, L, r + 5)[..., :r]  # strided view
    w, bias = f(d, r), f(d) - 2
    A, Dv, h0 = -np.exp(f(d, n)), f(d), f(b, d, n)
    delta = np.ascontiguousarray(np.einsum('blr,dr->bld', dtl, w) + bias)
    outs = []
    for low in (False, True):
        out, last = np.empty((b, L, d), np.float32), np.empty((b, d, n), np.float32)
        args = (np.zeros((1, 1, 1), np.float32), dtl, w, bias) if low else (delta, *fused_tokens.no_low_rank(d))
        scan(u, *args, A, Bm, Cm, Dv, z, h0, True, False, 15, False, out, last)
        outs.append((out, last))
    # Only the rounding of the two-term sum can differ (matmul vs the kernel's loop): fp32 ulps,
    # carried through softplus and the scan; 1e-5 is the model's equality bar.
    for got, want in zip(outs[1], outs[0]):
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        print(f'rel {rel:.2e}')
        assert rel < 1e-5
    # and the low-rank input is really used: another weight gives another result
    out2, last2 = np.empty((b, L, d), np.float32), np.empty((b, d, n), np.float32)
    scan(u, np.zeros((1, 1, 1), np.float32), dtl, w * 2, bias, A, Bm, Cm, Dv, z, h0, True, False, 15, False,
         out2, last2)
    assert np.linalg.norm(out2 - outs[1][0]) > 1e-3 * np.linalg.norm(outs[1][0])
