"""Selective-scan backends against the reference: outputs, last state, gradients, h0, dispatch.

Tolerance table (max |a - b| <= atol + rtol * |b|, elementwise; outputs are O(1..10)):

| comparison                          | dtype | rtol  | atol  | why                                                  |
|-------------------------------------|-------|-------|-------|------------------------------------------------------|
| same recurrence, fp32 (loop, fused,  | fp32  | 1e-5  | 1e-5  | identical product order; only the N-sum order and    |
|   mamba_ssm ref, h0 correction)     |       |       |       | exp implementation differ (a few ulp)                 |
| fp16 / bf16 inputs (all upcast)     | fp16  | 2e-3  | 2e-3  | fp32 inside; the cast of the output costs 1 ulp      |
|                                     | bf16  | 1.6e-2| 1.6e-2| (fp16 eps 9.8e-4, bf16 eps 7.8e-3): 2 ulp budget     |
| chunked, mambapy pscan (fp32)       | fp32  | 1e-4  | 1e-4  | other algorithm: exp of summed log-decays / tree     |
|                                     |       |       |       | scan instead of a product of exps (~K ulp drift)     |
| gradients loop vs ref (fp32)        | fp32  | 1e-4  | 1e-4  | backward sums L per-step terms in different orders   |
"""
from __future__ import annotations

import ast
import importlib.util
import logging
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rainmamba_core.ops import selective_scan as ss
from rainmamba_core.ops.selective_scan import (
    SelectiveScanError,
    apply_initial_state_correction,
    selective_scan,
    selective_scan_chunked,
    selective_scan_fused,
    selective_scan_loop,
    selective_scan_ref,
    set_default_backend,
    use_backend,
)

SAME_ALGO = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}
OTHER_ALGO_FP32 = (1e-4, 1e-4)
GRAD_FP32 = (1e-4, 1e-4)

# (B, D, L, N, groups): odd sizes, L=1, grouped B/C.
SHAPES = [(2, 8, 37, 4, 1), (1, 16, 64, 16, 1), (2, 4, 1, 8, 1), (2, 8, 19, 4, 2)]


def make_inputs(B: int, D: int, L: int, N: int, groups: int = 1, dtype: torch.dtype = torch.float32,
                seed: int = 0, h0: bool = True, A_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Inputs like the model's: A = -exp(.), softplus'd delta with bias, a z gate, random h0."""
    g = torch.Generator().manual_seed(seed)
    bc_shape = (B, N, L) if groups == 1 else (B, groups, N, L)
    x = {
        'u': torch.randn(B, D, L, generator=g), 'delta': torch.randn(B, D, L, generator=g) * 0.5 - 1.0,
        'A': -torch.exp(torch.randn(D, N, generator=g) * 0.5) * A_scale,
        'B': torch.randn(*bc_shape, generator=g), 'C': torch.randn(*bc_shape, generator=g),
        'D': torch.randn(D, generator=g), 'z': torch.randn(B, D, L, generator=g),
        'delta_bias': torch.randn(D, generator=g) * 0.1,
        'initial_state': torch.randn(B, D, N, generator=g) if h0 else None,
    }
    # Low-precision runs: the activations arrive in that dtype, the parameters stay fp32 (as in
    # the model, which keeps A, D, delta_bias in fp32).
    for k in ('u', 'delta', 'B', 'C', 'z'):
        x[k] = x[k].to(dtype)
    return x


def compare(name: str, got: torch.Tensor, want: torch.Tensor, tol: tuple[float, float]) -> None:
    diff = (got.float() - want.float()).abs().max().item() if want.numel() else 0.0
    print(f'{name}: max |diff| = {diff:.3g} (max |ref| = {want.float().abs().max().item() if want.numel() else 0:.3g})')
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=tol[0], atol=tol[1])


def run(fn, x: dict, **kw):
    return fn(**x, delta_softplus=True, return_last_state=True, **kw)


# ------------------------------------------------------------------------------- forward parity

@pytest.mark.parametrize('shape', SHAPES)
def test_loop_equals_ref(shape) -> None:
    x = make_inputs(*shape)
    y_ref, h_ref = run(selective_scan_ref, x)
    y, h = run(selective_scan_loop, x)
    compare('loop out', y, y_ref, SAME_ALGO[torch.float32])
    compare('loop last state', h, h_ref, SAME_ALGO[torch.float32])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape', SHAPES)
def test_fused_equals_ref(shape, dtype) -> None:
    if not ss.fused_available():
        pytest.skip('numba is not installed: the fused backend is unavailable')
    x = make_inputs(*shape, dtype=dtype)
    y_ref, h_ref = run(selective_scan_ref, x)
    y, h = run(selective_scan_fused, x)
    compare(f'fused out {dtype}', y, y_ref, SAME_ALGO[dtype])
    compare(f'fused last state {dtype}', h, h_ref, SAME_ALGO[torch.float32])  # state is fp32 in both


@pytest.mark.parametrize('chunk', [1, 8, 16, 64])
@pytest.mark.parametrize('shape', SHAPES)
def test_chunked_equals_ref(shape, chunk) -> None:
    x = make_inputs(*shape)  # L = 37, 19 are not multiples of any chunk; L=1 smaller than all
    y_ref, h_ref = run(selective_scan_ref, x)
    y, h = run(selective_scan_chunked, x, chunk=chunk)
    compare(f'chunked({chunk}) out', y, y_ref, OTHER_ALGO_FP32)
    compare(f'chunked({chunk}) last state', h, h_ref, OTHER_ALGO_FP32)


def test_chunked_is_stable_for_strong_decay() -> None:
    # dt*|A| up to ~100 per step: exp(-cumsum) over a 32-token chunk would overflow fp32
    # (exp(>88) = inf); segment sums only exponentiate non-positive differences.
    x = make_inputs(1, 4, 40, 4, A_scale=50.0)
    x['delta'] = x['delta'] + 3.0
    y_ref, h_ref = run(selective_scan_ref, x)
    y, h = run(selective_scan_chunked, x, chunk=32)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    compare('chunked strong decay', y, y_ref, OTHER_ALGO_FP32)


def test_no_h0_matches_zero_h0_and_no_optional_inputs() -> None:
    x = make_inputs(2, 4, 11, 3, h0=False)
    for k in ('D', 'z', 'delta_bias'):
        x[k] = None
    zero = dict(x, initial_state=torch.zeros(2, 4, 3))
    for fn in (selective_scan_ref, selective_scan_loop, selective_scan_chunked, selective_scan_fused):
        y, h = run(fn, x)
        y0, h0 = run(fn, zero)
        compare(f'{fn.__name__} h0=None vs 0', y, y0, SAME_ALGO[torch.float32])
        y_ref, _ = run(selective_scan_ref, x)
        compare(f'{fn.__name__} vs ref', y, y_ref, OTHER_ALGO_FP32)


def test_constant_B_C() -> None:
    # mamba_ssm also accepts time-invariant (D, N) B and C.
    x = make_inputs(2, 4, 9, 3)
    x['B'], x['C'] = torch.randn(4, 3), torch.randn(4, 3)
    y_ref, h_ref = run(selective_scan_ref, x)
    for fn in (selective_scan_loop, selective_scan_chunked, selective_scan_fused):
        y, h = run(fn, x)
        compare(f'{fn.__name__} constant B/C', y, y_ref, OTHER_ALGO_FP32)


# ------------------------------------------------------------------------------------ gradients

GRAD_INPUTS = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias', 'initial_state')


@pytest.mark.parametrize('fn', [selective_scan_loop, selective_scan_chunked], ids=['loop', 'chunked'])
@pytest.mark.parametrize('shape', [(2, 4, 13, 3, 1), (1, 4, 9, 5, 2)])
def test_gradients_equal_ref(fn, shape) -> None:
    base = make_inputs(*shape)
    grads = {}
    for impl in (selective_scan_ref, fn):
        x = {k: (v.clone().requires_grad_(k in GRAD_INPUTS) if v is not None else None) for k, v in base.items()}
        y, h = run(impl, x)
        g = torch.Generator().manual_seed(1)
        # Weight both outputs so the last state's gradient path is exercised too.
        loss = (y * torch.randn(y.shape, generator=g)).sum() + (h * torch.randn(h.shape, generator=g)).sum()
        loss.backward()
        grads[impl] = {k: x[k].grad for k in GRAD_INPUTS}
    for k in GRAD_INPUTS:
        compare(f'{fn.__name__} grad {k}', grads[fn][k], grads[selective_scan_ref][k], GRAD_FP32)


# ------------------------------------------------------------------------ closed-form h0 (CUDA math)

@pytest.mark.parametrize('shape', SHAPES)
def test_initial_state_correction_equals_scan_with_h0(shape) -> None:
    """What the CUDA path does: zero-state scan (with D, without z) + correction, then gate."""
    x = make_inputs(*shape)
    want_y, want_h = run(selective_scan_ref, x)
    y0, h0last = selective_scan_ref(x['u'], x['delta'], x['A'], x['B'], x['C'], x['D'], None, x['delta_bias'],
                                    True, None, True)
    y, h = apply_initial_state_correction(y0, x['delta'], x['A'], x['C'], x['initial_state'], x['delta_bias'],
                                          True, last_state=h0last, chunk=5)  # chunk=5: exercise the split
    y = (y * F.silu(x['z'].float())).to(want_y.dtype)
    compare('h0 correction out', y, want_y, SAME_ALGO[torch.float32])
    compare('h0 correction last state', h, want_h, SAME_ALGO[torch.float32])


def test_cuda_glue_with_reference_as_kernel() -> None:
    """selective_scan_cuda's body on the CPU, with the zero-state reference standing in for the kernel."""
    def zero_state_kernel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, None, return_last_state)

    x = make_inputs(2, 8, 19, 4, 2)
    want_y, want_h = run(selective_scan_ref, x)
    y, h = run(lambda **k: ss.scan_with_zero_state_kernel(zero_state_kernel, **k), x)
    compare('cuda glue out', y, want_y, SAME_ALGO[torch.float32])
    compare('cuda glue last state', h, want_h, SAME_ALGO[torch.float32])


# ------------------------------------------------------------------------- third-party references

def test_ref_equals_mambapy_pscan() -> None:
    mamba = pytest.importorskip('mambapy.mamba', reason='mambapy is not installed (pip install mambapy)')
    x = make_inputs(2, 8, 37, 4, h0=False)  # mambapy has no h0; L=37 exercises its padding
    dt = F.softplus(x['delta'] + x['delta_bias'][:, None])
    want = selective_scan_ref(x['u'], dt, x['A'], x['B'], x['C'], x['D'])
    # MambaBlock.selective_scan uses none of its instance state: x, delta (B, L, D); B, C (B, L, N).
    got = mamba.MambaBlock.selective_scan(None, x['u'].transpose(1, 2), dt.transpose(1, 2), x['A'],
                                          x['B'].transpose(1, 2), x['C'].transpose(1, 2), x['D'])
    compare('mambapy pscan', got.transpose(1, 2).contiguous(), want, OTHER_ALGO_FP32)


def _mamba_ssm_ref():
    """mamba_ssm's own selective_scan_ref, extracted from its source file: importing the module
    needs the CUDA extension and triton, which a CPU machine does not have."""
    spec = importlib.util.find_spec('mamba_ssm')
    if spec is None or spec.origin is None:
        pytest.skip('mamba_ssm is not installed (MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE pip install '
                    '--no-build-isolation --no-deps mamba-ssm); comparison with its selective_scan_ref skipped')
    path = Path(spec.origin).parent / 'ops' / 'selective_scan_interface.py'
    tree = ast.parse(path.read_text())
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'selective_scan_ref']
    if not fn:
        pytest.skip(f'{path} has no selective_scan_ref')
    einops = pytest.importorskip('einops')
    namespace = {'torch': torch, 'F': F, 'rearrange': einops.rearrange, 'repeat': einops.repeat}
    exec(compile(ast.Module(body=fn, type_ignores=[]), str(path), 'exec'), namespace)
    return namespace['selective_scan_ref']


@pytest.mark.parametrize('shape', SHAPES)
def test_ref_equals_mamba_ssm_ref(shape) -> None:
    theirs = _mamba_ssm_ref()
    x = make_inputs(*shape, h0=False)
    y_ref, h_ref = run(selective_scan_ref, x)
    args = {k: v for k, v in x.items() if k != 'initial_state'}
    y, h = theirs(**args, delta_softplus=True, return_last_state=True)
    compare('mamba_ssm ref out', y, y_ref, SAME_ALGO[torch.float32])
    compare('mamba_ssm ref last state', h, h_ref, SAME_ALGO[torch.float32])


# ----------------------------------------------------------------------------------- dispatcher

def test_unknown_backend_is_a_clear_error() -> None:
    x = make_inputs(1, 2, 3, 2)
    with pytest.raises(SelectiveScanError, match="unknown selective-scan backend 'fast'.*expected one of"):
        selective_scan(**x, backend='fast')
    with pytest.raises(SelectiveScanError, match='unknown'):
        set_default_backend('nope')


def test_cuda_backend_without_cuda_is_a_clear_error() -> None:
    x = make_inputs(1, 2, 3, 2)
    with pytest.raises(SelectiveScanError) as err:
        selective_scan(**x, backend='cuda')
    msg = str(err.value)
    print(msg)
    # Either the kernel is missing (then the install command is named) or the tensors are on the CPU.
    assert ('MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation mamba-ssm causal-conv1d' in msg
            or 'needs CUDA tensors' in msg)


@pytest.mark.skipif(not ss.fused_available(), reason='numba is not importable')
@pytest.mark.parametrize('with_h0', [True, False])
def test_fused_gradients_equal_ref(with_h0) -> None:
    """The differentiable fused path (numba forward/backward kernels) against autograd through
    the reference, for every input including h0 and a loss on the last state."""
    x = make_inputs(2, 3, 29, 4, h0=with_h0)
    names = [k for k, v in x.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    grads = {}
    for backend in ('ref', 'fused'):
        inp = {k: (v.detach().clone().requires_grad_(True) if k in names else v) for k, v in x.items()}
        y, last = selective_scan(**inp, delta_softplus=True, return_last_state=True, backend=backend)
        (y.pow(2).sum() * 0.1 + y.sum() + last.sum()).backward()
        grads[backend] = {k: inp[k].grad for k in names}
    for k in names:
        ref, got = grads['ref'][k], grads['fused'][k]
        scale = ref.abs().max().item() + 1e-6
        print(f'{k}: max |diff| {(ref - got).abs().max().item():.2e} (scale {scale:.2e})')
        # fp32 with different summation order (per-channel parts summed after the kernel):
        # agreement to ~1e-5 of the gradient's magnitude.
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * scale), k


def test_fused_grad_refuses_grouped_B_C() -> None:
    x = make_inputs(1, 4, 3, 2, groups=2)
    x['u'].requires_grad_(True)
    with pytest.raises(SelectiveScanError, match=r'\(B, N, L\)'):
        selective_scan(**x, backend='fused')


@pytest.fixture
def spy(monkeypatch) -> list[str]:
    calls: list[str] = []
    for name, fn in list(ss._IMPLS.items()):
        monkeypatch.setitem(ss._IMPLS, name, lambda *a, _n=name, _f=fn, **k: (calls.append(_n), _f(*a, **k))[1])
    monkeypatch.setattr(ss, '_logged', set())
    return calls


def test_auto_on_cpu_with_grad_uses_fused_and_logs_once(spy, caplog) -> None:
    x = make_inputs(1, 2, 5, 2)
    x['delta'].requires_grad_(True)
    with caplog.at_level(logging.INFO, logger=ss.__name__):
        y = selective_scan(**x, backend='auto')
        selective_scan(**x, backend='auto')
    expected = 'fused' if ss.fused_available() else 'ref'
    assert spy == [expected, expected]
    assert y.requires_grad
    msgs = [r.getMessage() for r in caplog.records if f"'{expected}'" in r.getMessage()]
    assert len(msgs) == 1


def test_auto_with_grad_and_grouped_B_C_uses_ref(spy) -> None:
    x = make_inputs(1, 4, 5, 2, groups=2)
    x['u'].requires_grad_(True)
    selective_scan(**x, backend='auto')
    assert spy == ['ref']


def test_auto_on_cpu_without_grad_uses_fused(spy) -> None:
    x = make_inputs(1, 2, 5, 2)
    with torch.no_grad():
        selective_scan(**x)
    assert spy == (['fused'] if ss.fused_available() else ['ref'])


def test_default_backend_setter_and_context_manager(spy) -> None:
    x = make_inputs(1, 2, 5, 2)
    with use_backend('loop'):
        selective_scan(**x)
        with use_backend('chunked'):
            selective_scan(**x)
        selective_scan(**x)
    try:
        set_default_backend('ref')
        with torch.no_grad():
            selective_scan(**x)
        selective_scan(**x, backend='loop')  # an explicit name wins over the default
    finally:
        set_default_backend('auto')
    assert spy == ['loop', 'chunked', 'loop', 'ref', 'loop']


def test_callable_backend_is_used_in_its_thread_only(spy) -> None:
    x = make_inputs(1, 2, 5, 2)
    calls: list[int] = []

    def custom(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state):
        calls.append(u.shape[-1])
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                                  return_last_state)

    other: list[object] = []
    with use_backend(custom):
        out = selective_scan(**x, return_last_state=True)
        worker = threading.Thread(target=lambda: other.append(ss.default_backend()))
        worker.start()
        worker.join()
    assert calls == [5] and spy == []  # no registered backend ran
    want = selective_scan_ref(**x, return_last_state=True)
    assert all(torch.equal(a, b) for a, b in zip(out, want))
    assert other == ['auto'] and ss.default_backend() == 'auto'  # another thread, and after the block
    with pytest.raises(SelectiveScanError, match="unknown selective-scan backend 'fast'"):
        with use_backend('fast'):
            pass


def test_shape_errors_name_the_input() -> None:
    x = make_inputs(1, 2, 5, 2)
    with pytest.raises(SelectiveScanError, match='initial_state has shape'):
        selective_scan_ref(**dict(x, initial_state=torch.zeros(1, 2, 3)))
    with pytest.raises(SelectiveScanError, match='B has shape'):
        selective_scan_ref(**dict(x, B=torch.zeros(1, 2, 4)))
