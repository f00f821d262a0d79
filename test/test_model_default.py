"""The bundled default model: present it loads strictly; missing, a seeded untrained stand-in and a warning."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rainmamba_core.models import rainmamba as rm


def test_bundled_default_loads_and_is_causal() -> None:
    if not rm.DEFAULT_MODEL.is_file():
        pytest.skip(f'{rm.DEFAULT_MODEL} is not in this checkout')
    net = rm.load_default_model()
    assert net.config.causal and net.config.residual_output
    stored = torch.load(rm.DEFAULT_MODEL, weights_only=True)
    assert all(torch.equal(v, stored['state_dict'][k]) for k, v in net.state_dict().items())
    assert rm.DEFAULT_MODEL.stat().st_size <= 20 * 2 ** 20  # the size cap for the package


def test_missing_default_warns_and_gives_the_same_untrained_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(rm, 'DEFAULT_MODEL', tmp_path / 'absent.pt')
    with caplog.at_level(logging.WARNING, logger=rm.log.name):
        a = rm.load_default_model()
    assert 'absent.pt' in caplog.text and 'UNTRAINED' in caplog.text
    torch.manual_seed(123)  # the stand-in does not depend on (or disturb) the global RNG
    before = torch.get_rng_state()
    b = rm.load_default_model()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
