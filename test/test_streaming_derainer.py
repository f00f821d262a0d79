"""The Derainer facade: per-stream state, reset rules, batching, windowed mode, input errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rainmamba_core.backends.torch_backend import BackendError, TorchBackend
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
from rainmamba_core.streaming.derainer import Derainer, DerainerError


@pytest.fixture(scope='module')
def model() -> RainMamba:
    torch.manual_seed(0)
    return RainMamba(RainMambaConfig.tiny()).eval()


def _derainer(model: RainMamba, **kw) -> Derainer:
    return Derainer(backend=TorchBackend(model, device='cpu'), **kw)


def _frames(n: int, h: int = 32, w: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_streaming_matches_model_step(model):
    frames = _frames(3)
    d = _derainer(model)
    outs = [d.process('cam', f, i * 10**8) for i, f in enumerate(frames)]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()[None] / 255
    with torch.no_grad():
        ref = model(x)[0].clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    # uint8 rounding of nearly identical floats: at most 1 level apart.
    assert max(np.abs(o.astype(int) - r.astype(int)).max() for o, r in zip(outs, ref)) <= 1
    assert d.counters['frames'] == 3 and sum(d.counters['resets'].values()) == 0


def test_streams_are_independent_and_batched_equal_alone(model):
    a, b = _frames(3, seed=1), _frames(3, seed=2)
    together = _derainer(model)
    outs = [together.process_batch([('a', fa, i), ('b', fb, i)]) for i, (fa, fb) in enumerate(zip(a, b))]
    alone = _derainer(model)
    solo = [alone.process('b', fb, i) for i, fb in enumerate(b)]
    assert all(np.abs(o[1].astype(int) - s.astype(int)).max() <= 1 for o, s in zip(outs, solo))


@pytest.mark.parametrize('reason,stamps,sizes', [
    ('time_backwards', [5 * 10**8, 6 * 10**8, 1 * 10**8], [(32, 40)] * 3),
    ('gap', [0, 10**8, 5 * 10**9], [(32, 40)] * 3),
    ('size_change', [0, 10**8, 2 * 10**8], [(32, 40), (32, 40), (40, 48)]),
])
def test_reset_rules(model, reason, stamps, sizes):
    d = _derainer(model, gap_reset_s=1.0)
    for stamp, (h, w) in zip(stamps, sizes):
        d.process('cam', _frames(1, h, w)[0], stamp)
    resets = d.counters['resets']
    assert resets[reason] == 1 and sum(resets.values()) == 1


def test_reset_makes_the_stream_start_fresh(model):
    frames = _frames(3)
    d = _derainer(model)
    for i, f in enumerate(frames[:2]):
        d.process('cam', f, i)
    d.reset('cam')
    after = d.process('cam', frames[2], 2)
    fresh = _derainer(model).process('cam', frames[2], 0)
    assert np.array_equal(after, fresh)
    assert d.counters['resets']['request'] == 1


def test_non_finite_state_resets_and_passes_through(model):
    d = _derainer(model)
    f = _frames(2)
    d.process('cam', f[0], 0)
    stream = d._streams['cam']
    stream.state = {k: torch.full_like(v, float('nan')) for k, v in stream.state.items()}
    out = d.process('cam', f[1], 1)
    assert np.array_equal(out, f[1])
    assert d.counters['resets']['non_finite'] == 1


def test_windowed_mode_runs_the_last_window(model):
    frames = _frames(4)
    d = _derainer(model, mode='windowed', window=3)
    outs = [d.process('cam', f) for f in frames]
    clip = torch.from_numpy(np.stack(frames[1:4])).permute(0, 3, 1, 2).float()[None] / 255
    with torch.no_grad():
        ref = model(clip)[0, -1].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(outs[-1].astype(int) - ref.astype(int)).max() <= 1


def test_max_size_keeps_output_size(model):
    d = _derainer(model, max_size=32)
    out = d.process('cam', _frames(1, 48, 64)[0])
    assert out.shape == (48, 64, 3)


@pytest.mark.parametrize('bad,match', [
    (np.zeros((32, 40), np.uint8), r'expected an \(H, W, 3\) uint8'),
    (np.zeros((32, 40, 3), np.float32), 'float32'),
    (np.zeros((4, 4, 3), np.uint8), 'too small'),
])
def test_bad_frames_are_refused(model, bad, match):
    with pytest.raises(DerainerError, match=match):
        _derainer(model).process('cam', bad)


def test_bad_configuration_is_refused(model):
    with pytest.raises(DerainerError, match="mode 'fast'"):
        _derainer(model, mode='fast')
    official = RainMamba(RainMambaConfig.tiny(causal=False))
    with pytest.raises(DerainerError, match='windowed'):
        Derainer(backend=TorchBackend(official, device='cpu'), mode='streaming')
    with pytest.raises(BackendError, match='needs a CUDA device'):
        TorchBackend(model, device='cpu', precision='fp16')
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match='CUDA is not available'):
            TorchBackend(model, device='cuda')
