"""The one exception of `rainmamba replay`."""
from __future__ import annotations

from rainmamba_core.errors import RainMambaError


class ReplayError(RainMambaError, Exception):
    """Replay cannot proceed; the message names the input, what was expected and what to do."""
