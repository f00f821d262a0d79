"""The public API at the package top: the names resolve to the real classes, lazily."""
from __future__ import annotations

import subprocess
import sys

import pytest


def test_top_level_names_are_the_real_classes() -> None:
    import rainmamba_core
    from rainmamba_core.errors import RainMambaError
    from rainmamba_core.models.config import RainMambaConfig
    from rainmamba_core.models.rainmamba import RainMamba
    from rainmamba_core.streaming.derainer import Derainer
    assert rainmamba_core.RainMamba is RainMamba and rainmamba_core.RainMambaConfig is RainMambaConfig
    assert rainmamba_core.Derainer is Derainer and rainmamba_core.RainMambaError is RainMambaError
    assert set(rainmamba_core.__all__) <= set(dir(rainmamba_core))
    with pytest.raises(AttributeError, match='no attribute'):
        rainmamba_core.NotAThing  # noqa: B018


def test_importing_the_package_imports_no_torch() -> None:
    code = 'import sys, rainmamba_core; assert "torch" not in sys.modules, "torch imported"; print("ok")'
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == 'ok', res.stderr
