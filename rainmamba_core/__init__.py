"""RainMamba video deraining: the model, training, evaluation and export (no ROS imports).

The public API, importable from the package top::

    from rainmamba_core import Derainer, RainMamba, RainMambaConfig, RainMambaError

Names are resolved lazily on first use, so ``import rainmamba_core`` stays cheap and the
ONNX-only runtime (``Derainer(backend='onnxruntime')``) still works without torch installed.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ['Derainer', 'RainMamba', 'RainMambaConfig', 'RainMambaError']

_HOME = {
    'Derainer': 'rainmamba_core.streaming.derainer',
    'RainMamba': 'rainmamba_core.models.rainmamba',
    'RainMambaConfig': 'rainmamba_core.models.config',
    'RainMambaError': 'rainmamba_core.errors',
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
