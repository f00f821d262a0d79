"""One safe way to read weight files: ``torch.load(weights_only=True)`` with a one-line error.

Checkpoints, training checkpoints, VGG weights and LPIPS weights all come through here, so every
unreadable file (truncated download, a pickle of objects, not a torch file) is refused the same
way: the error names the file, what it was meant to be, and why the safe loader refused it.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from rainmamba_core.errors import load_error_reason


def safe_load(path: str | os.PathLike, error: type[Exception], what: str, expected: str = '',
              map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)``; on failure raise ``error`` naming ``what`` and ``path``.

    Args:
        path: the file.
        error: the exception class to raise (a RainMambaError subclass of the caller's module).
        what: what the file is meant to be, e.g. ``'checkpoint'`` or ``'the vgg16 weights'``.
        expected: optional note on the expected format, shown in parentheses.
    """
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, not a torch file ...
        note = f' (expected {expected})' if expected else ''
        raise error(f'cannot read {what} {path}{note}: {load_error_reason(exc)}') from exc
