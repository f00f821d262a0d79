"""The one exception of training."""
from __future__ import annotations

from rainmamba_core.errors import RainMambaError


class TrainError(RainMambaError, RuntimeError):
    """Training cannot start or continue (bad data, non-finite loss, inconsistent resume)."""
