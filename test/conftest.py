"""Shared fixtures: where ../shared lives, ROS isolation, deterministic torch."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('RAINMAMBA_SHARED', ROOT.parent / 'shared'))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test with the reason it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'{path} is absent (tests that need ../shared/{"/".join(parts)} skip without it)')
    return path


@pytest.fixture
def shared() -> type:
    """Access to ../shared: `shared.path('data', 'hilbert')` skips when absent."""
    class _Shared:
        path = staticmethod(shared_path)
    return _Shared


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private ROS domain on localhost for this test (and the processes it starts)."""
    domain = str(random.Random(os.getpid() ^ id(monkeypatch)).randint(30, 200))
    monkeypatch.setenv('ROS_DOMAIN_ID', domain)
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    monkeypatch.setenv('RMW_IMPLEMENTATION', os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp'))
    return dict(os.environ)


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    # Two cores: keep intra-op threads at 2 so tests behave the same on CI and here.
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        pass
