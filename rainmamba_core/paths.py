"""Files the package ships (importable without torch: the ONNX-only runtime needs them too)."""
from __future__ import annotations

from pathlib import Path

# The bundled default model (see weights/MODEL_CARD.md): what the demo, the node, replay, eval and
# export use when no model is given.
DEFAULT_MODEL = Path(__file__).resolve().parent / 'weights' / 'default_tiny.pt'
