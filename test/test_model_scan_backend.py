"""The scan backend is a choice the model carries (issue 17 item 4), not a thread-local."""
from __future__ import annotations

import pytest
import torch

from rainmamba_core.export.scan import export_scan
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
from rainmamba_core.modules.bimamba import BiMamba
from rainmamba_core.ops import selective_scan as ss


def _mixers(model: RainMamba) -> list[BiMamba]:
    return [m for m in model.modules() if isinstance(m, BiMamba)]


def test_default_is_auto_and_set_reaches_every_mixer():
    model = RainMamba(RainMambaConfig.tiny())
    assert model.scan_backend == 'auto' and {m.scan_backend for m in _mixers(model)} == {'auto'}
    assert model.set_scan_backend('ref') is model
    assert {m.scan_backend for m in _mixers(model)} == {'ref'}
    with pytest.raises(ss.SelectiveScanError, match="unknown selective-scan backend 'fast'"):
        model.set_scan_backend('fast')


def test_model_choice_is_used_whatever_the_thread_default(monkeypatch):
    torch.manual_seed(0)
    model = RainMamba(RainMambaConfig.tiny(), scan_backend='loop').eval()
    calls: list[str] = []
    for name, fn in list(ss._IMPLS.items()):
        monkeypatch.setitem(ss._IMPLS, name, lambda *a, _n=name, _f=fn, **k: (calls.append(_n), _f(*a, **k))[1])
    with torch.no_grad(), ss.use_backend('chunked'):  # the thread default no longer reaches the model
        model(torch.rand(1, 1, 3, 32, 32))
    assert calls and set(calls) == {'loop'}


def test_export_scan_sets_and_restores_the_models_backend():
    model = RainMamba(RainMambaConfig.tiny(), scan_backend='ref')
    with export_scan('blocked', model=model):
        assert callable(model.scan_backend) and all(callable(m.scan_backend) for m in _mixers(model))
    assert model.scan_backend == 'ref' and {m.scan_backend for m in _mixers(model)} == {'ref'}
