"""The Derainer's `novelty_clamp` option: the model file's clamp replaced at load, for every front end.

The clamp itself is tested in test_novelty_clamp.py; here: the option reaches the model (torch and the
ONNX cache), -1 keeps the file's own, and models or files that cannot take a value refuse it with why.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rainmamba_core.models.config import ConfigError, with_novelty_clamp
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
from rainmamba_core.options import OptionError, check_option, derainer_kwargs
from rainmamba_core.streaming.derainer import Derainer, DerainerError

ALIGNED = dict(detail_channels=8, detail_previous=True, detail_align=True)


def _pan() -> np.ndarray:
    """Four 64x96 uint8 frames of a smooth scene panning 2 px down and 3 px right a frame, a bright
    upright pole in every frame (a thin line the clamp keeps when it is not new)."""
    g = torch.Generator().manual_seed(5)
    big = F.interpolate(torch.rand(1, 3, 16, 20, generator=g), size=(120, 150), mode='bicubic',
                        align_corners=False).clamp(0.2, 0.6)
    big[..., 50:52] = 0.95
    frames = torch.cat([big[..., 20 - 2 * t:84 - 2 * t, 20 - 3 * t:116 - 3 * t] for t in range(4)])
    return (frames * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _model_file(tmp_path: Path, clamp: float = 0.0, **overrides) -> Path:
    torch.manual_seed(17)
    model = RainMamba(RainMambaConfig.tiny(**{**ALIGNED, 'novelty_clamp': clamp, **overrides})).eval()
    if model.config.detail_channels:
        torch.nn.init.normal_(model.detail.out.weight, std=0.05)  # a head that changes the frame
    path = tmp_path / f'model_{clamp:g}.pt'
    model.save_checkpoint(path)
    return path


def _stream(derainer: Derainer, frames: np.ndarray) -> np.ndarray:
    return np.stack([derainer.process('cam', f) for f in frames])


def test_the_option_replaces_the_file_s_clamp_and_minus_one_keeps_it(tmp_path: Path) -> None:
    path = _model_file(tmp_path, clamp=0.0)
    frames = _pan()
    own = _stream(Derainer(path, device='cpu'), frames)
    kept = _stream(Derainer(path, device='cpu', **derainer_kwargs({'novelty_clamp': -1.0})), frames)
    # a threshold no random model's change reaches: the clamp acts in full on every later frame
    clamped = _stream(Derainer(path, device='cpu', novelty_clamp=1000.0), frames)
    assert np.array_equal(own, kept)   # -1: the file's own (off here)
    assert np.array_equal(own[0], clamped[0])  # the first frame has nothing earlier to compare with
    assert np.abs(own[1:].astype(int) - clamped[1:]).max() > 10  # the later ones are clamped
    # ... exactly as a model file written with that clamp streams
    written = _stream(Derainer(_model_file(tmp_path, clamp=1000.0), device='cpu'), frames)
    assert np.array_equal(clamped, written)
    assert Derainer(path, device='cpu', novelty_clamp=1000.0).novelty_clamp == 1000.0
    assert Derainer(path, device='cpu').novelty_clamp == 0.0
    # and back off from a clamped file
    off = _stream(Derainer(_model_file(tmp_path, clamp=1000.0), device='cpu', novelty_clamp=0.0), frames)
    assert np.array_equal(off, own)


def test_windowed_mode_takes_the_option_too(tmp_path: Path) -> None:
    path = _model_file(tmp_path, clamp=0.0)
    frames = _pan()
    plain = _stream(Derainer(path, device='cpu', mode='windowed', window=3), frames)
    clamped = _stream(Derainer(path, device='cpu', mode='windowed', window=3, novelty_clamp=1000.0), frames)
    assert np.abs(plain[1:].astype(int) - clamped[1:]).max() > 10


def test_models_and_values_that_cannot_take_it_are_refused_with_why(tmp_path: Path) -> None:
    no_head = _model_file(tmp_path, clamp=0.0, detail_previous=False, detail_align=False)
    with pytest.raises(DerainerError, match='needs detail_previous=True and detail_align=True'):
        Derainer(no_head, device='cpu', novelty_clamp=1.0)
    assert Derainer(no_head, device='cpu', novelty_clamp=0.0).novelty_clamp == 0.0  # off is always possible
    with pytest.raises(OptionError, match='between -1 and 0'):
        check_option('novelty_clamp', -0.5)
    with pytest.raises(OptionError, match=r'outside \[-1.0, 255.0\]'):
        check_option('novelty_clamp', -2.0)
    with pytest.raises(ConfigError, match='novelty_clamp=-0.5 cannot be set on this model'):
        with_novelty_clamp(RainMambaConfig.tiny(**ALIGNED), -0.5)
    with pytest.raises(DerainerError, match='a ready backend object brings its model as it is'):
        from rainmamba_core.backends.torch_backend import TorchBackend
        Derainer(backend=TorchBackend(RainMamba.from_checkpoint(no_head), device='cpu'), novelty_clamp=0.0)


def test_the_onnx_cache_exports_the_clamp_asked_and_a_fixed_graph_refuses_another(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnx')
    from rainmamba_core.backends.onnx_backend import OnnxBackendError
    from rainmamba_core.export.onnx_export import export_step
    monkeypatch.setenv('RAINMAMBA_CACHE', str(tmp_path / 'cache'))
    path = _model_file(tmp_path, clamp=0.0)
    frames = _pan()
    torch_clamped = _stream(Derainer(path, device='cpu', novelty_clamp=1000.0), frames)
    cached = Derainer(path, device='cpu', backend='onnxruntime', novelty_clamp=1000.0)
    onnx_clamped = _stream(cached, frames)
    # ONNX Runtime and torch round the same float output to uint8: one grey level where they differ
    assert np.abs(onnx_clamped.astype(int) - torch_clamped).max() <= 1
    plain_cached = Derainer(path, device='cpu', backend='onnxruntime')
    _stream(plain_cached, frames[:1])
    assert len(list((tmp_path / 'cache').glob('*.onnx'))) == 2  # one graph per clamp, not one overwritten
    # an exported file has the clamp in its graph: its own value (or -1) only
    graph = tmp_path / 'plain.onnx'
    export_step(RainMamba.from_checkpoint(path).eval(), graph, 64, 96)
    assert Derainer(graph, device='cpu', novelty_clamp=0.0).novelty_clamp == 0.0
    with pytest.raises(OnnxBackendError, match=r'fixed at export \(0\), novelty_clamp=1 was asked'):
        Derainer(graph, device='cpu', novelty_clamp=1.0)
