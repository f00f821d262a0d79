"""The package's error base (torch-free, so every layer can import it).

Every error that means "this input, file or setting is wrong, and here is what to fix" derives
from :class:`RainMambaError` as well as from the builtin it has always been (ValueError,
RuntimeError, ...), so existing ``except ValueError`` code keeps working. The ``rainmamba``
command line prints a RainMambaError as one line naming the verb, without a traceback (``-vv``
logs it), and exits with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class RainMambaError(Exception):
    """Base of the package's user-facing errors (bad input, missing files, invalid settings)."""


def load_error_reason(exc: BaseException) -> str:
    """A one-line reason why ``torch.load(..., weights_only=True)`` failed, for our error messages.

    torch's own message for a refused pickle starts by suggesting ``weights_only=False``; this
    package never does that, so the reason keeps only what the safe loader objected to.
    """
    text = str(exc)
    if 'Weights only load failed' in text:
        detail = text.split('WeightsUnpickler error:', 1)[-1] if 'WeightsUnpickler error:' in text else ''
        detail = ' '.join(detail.split('Check the documentation', 1)[0].split())
        return ('not a plain torch.save file of tensors and containers: the safe loader (weights_only=True) '
                f'refused it{": " + detail if detail else ""}. Arbitrary pickles are never loaded; if you '
                'trust the file, re-save its tensors with torch.save(model.state_dict(), path)')
    first = text.strip().splitlines()[0] if text.strip() else ''
    return f'{type(exc).__name__}: {first}' if first else type(exc).__name__
