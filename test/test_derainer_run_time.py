"""The Derainer's run-time settings `novelty_clamp` and `detail_align_tiles`: the model file's own
replaced at load, for every front end.

The clamp and the tiles themselves are tested in test_novelty_clamp.py and test_ops_align.py; here:
the options reach the model (torch and the ONNX cache), -1 keeps the file's own, and models or files
that cannot take a value refuse it with why.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rainmamba_core.models.config import ConfigError, with_run_time
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


def _split() -> np.ndarray:
    """Four 96x128 uint8 frames whose left half pans 3 px right a frame and whose right half 3 px
    left (a car crossing a still scene, say): one shift for the frame cannot follow both halves,
    a shift per tile can."""
    g = torch.Generator().manual_seed(9)
    big = (F.interpolate(torch.rand(1, 3, 24, 40, generator=g), size=(96, 160), mode='bicubic',
                         align_corners=False).clamp(0.1, 0.9) * 255).round().byte()[0].permute(1, 2, 0).numpy()
    frames = []
    for t in range(4):
        frame = np.empty((96, 128, 3), np.uint8)
        frame[:, :64] = big[:, 16 - 3 * t:80 - 3 * t]
        frame[:, 64:] = big[:, 80 + 3 * t:144 + 3 * t]
        frames.append(frame)
    return np.stack(frames)


def _model_file(tmp_path: Path, clamp: float = 0.0, **overrides) -> Path:
    torch.manual_seed(17)
    model = RainMamba(RainMambaConfig.tiny(**{**ALIGNED, 'novelty_clamp': clamp, **overrides})).eval()
    if model.config.detail_channels:
        torch.nn.init.normal_(model.detail.out.weight, std=0.05)  # a head that changes the frame
    tiles = overrides.get('detail_align_tiles', 0)
    path = tmp_path / f'model_{clamp:g}_{tiles}.pt'
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
        with_run_time(RainMambaConfig.tiny(**ALIGNED), {'novelty_clamp': -0.5})
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


def test_detail_align_tiles_replaces_the_file_s_and_minus_one_keeps_it(tmp_path: Path) -> None:
    path = _model_file(tmp_path)
    frames = _split()
    own = _stream(Derainer(path, device='cpu'), frames)
    kept = _stream(Derainer(path, device='cpu', **derainer_kwargs({'detail_align_tiles': -1})), frames)
    tiled = _stream(Derainer(path, device='cpu', **derainer_kwargs({'detail_align_tiles': 3})), frames)
    assert np.array_equal(own, kept)
    assert np.array_equal(own[0], tiled[0])  # nothing earlier to align on the first frame
    assert np.abs(own[1:].astype(int) - tiled[1:]).max() > 2  # the halves' own shifts reach the head
    # ... exactly as a model file written with 3x3 tiles streams, and back to one shift from it
    tiled_file = _model_file(tmp_path, detail_align_tiles=3)
    assert np.array_equal(tiled, _stream(Derainer(tiled_file, device='cpu'), frames))
    assert np.array_equal(own, _stream(Derainer(tiled_file, device='cpu', detail_align_tiles=0), frames))
    assert Derainer(tiled_file, device='cpu').detail_align_tiles == 3
    assert Derainer(path, device='cpu', detail_align_tiles=2).detail_align_tiles == 2
    # windowed mode sees the tiles too
    windowed = _stream(Derainer(path, device='cpu', mode='windowed', window=3, detail_align_tiles=3), frames)
    plain = _stream(Derainer(path, device='cpu', mode='windowed', window=3), frames)
    assert np.abs(plain[1:].astype(int) - windowed[1:]).max() > 2


def test_detail_align_tiles_refusals_say_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match='detail_align_tiles=1 is one tile'):
        check_option('detail_align_tiles', 1)
    with pytest.raises(OptionError, match=r'detail_align_tiles=5 is outside \[-1, 4\]'):
        check_option('detail_align_tiles', 5)
    with pytest.raises(OptionError, match='expected int'):
        check_option('detail_align_tiles', 2.5)
    no_head = _model_file(tmp_path, detail_previous=False, detail_align=False)
    with pytest.raises(DerainerError, match='detail_align_tiles=3 cannot be set on this model: .*detail_align=True'):
        Derainer(no_head, device='cpu', detail_align_tiles=3)
    with pytest.raises(ConfigError, match=r"\['window'\] are not run-time settings"):
        with_run_time(RainMambaConfig.tiny(**ALIGNED), {'window': 3})
    with pytest.raises(DerainerError, match='novelty_clamp and detail_align_tiles are set when the Derainer loads'):
        from rainmamba_core.backends.torch_backend import TorchBackend
        Derainer(backend=TorchBackend(RainMamba.from_checkpoint(no_head), device='cpu'), novelty_clamp=0.0,
                 detail_align_tiles=0)


def test_the_onnx_cache_exports_the_tiles_asked_and_a_fixed_graph_refuses_others(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnx')
    from rainmamba_core.backends.onnx_backend import OnnxBackendError
    from rainmamba_core.export.onnx_export import export_step
    monkeypatch.setenv('RAINMAMBA_CACHE', str(tmp_path / 'cache'))
    path = _model_file(tmp_path)
    frames = _split()
    torch_tiled = _stream(Derainer(path, device='cpu', detail_align_tiles=3), frames)
    onnx_tiled = _stream(Derainer(path, device='cpu', backend='onnxruntime', detail_align_tiles=3), frames)
    # ONNX Runtime and torch round the same float output to uint8: one grey level where they differ
    assert np.abs(onnx_tiled.astype(int) - torch_tiled).max() <= 1
    both = Derainer(path, device='cpu', backend='onnxruntime', detail_align_tiles=3, novelty_clamp=1000.0)
    _stream(both, frames[:1])
    assert len(list((tmp_path / 'cache').glob('*.onnx'))) == 2  # one graph per combination of settings
    graph = tmp_path / 'tiled.onnx'
    export_step(RainMamba.from_checkpoint(_model_file(tmp_path, detail_align_tiles=3)).eval(), graph, 96, 128)
    assert Derainer(graph, device='cpu', detail_align_tiles=3).detail_align_tiles == 3
    with pytest.raises(OnnxBackendError, match=r'detail_align_tiles fixed at export \(3\), detail_align_tiles=0 '
                                               'was asked'):
        Derainer(graph, device='cpu', detail_align_tiles=0)
