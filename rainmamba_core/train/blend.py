"""``rainmamba blend``: the weights of two models of one architecture, mixed by a share.

    rainmamba blend default runs/my_camera/model_final.pt --alpha 0.3 --out blended.pt

A fine-tune on one kind of data (your camera's real rain, `docs/training.md`) moves the model
towards that data and away from what it was good at before. Blending its weights with the model
it started from, ``(1 - alpha) * base + alpha * tuned`` for every floating-point tensor, gives a
model between the two (Wortsman et al., *Robust fine-tuning of zero-shot models*, CVPR 2022,
"WiSE-FT"); ``alpha`` says how far towards the fine-tune. It works when the fine-tune started from
the base, or when both are fine-tunes of one model (siblings: a "model soup", Wortsman et al.,
ICML 2022): they then lie in one basin, which unrelated models do not. The model card's (27)
measures it on the bundled default and its real-rain fine-tune, and the bundled default itself is
such a blend (`scripts/train_default.sh`). The checkpoint keeps both inputs' training summaries.

Both models must have the same configuration and the same keys and shapes; integer buffers must
be equal. Anything else is refused with what differs. The one exception is a key that adds no
weights (``WEIGHT_FREE_KEYS``: ``detail_align_thin``, what the detail head is shown, and the
``novelty_clamp`` options, an inference guard on the output): a fine-tune that switched one on
blends with its base, and the blend runs with the fine-tune's value (said on the console).
``--set KEY=VALUE`` sets one of them on the result, so the same verb switches the bundled model's
novelty clamp off (``rainmamba blend default default --alpha 0 --set novelty_clamp=0 --out
no_clamp.pt``: the weights as they are, the clamp off).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from rainmamba_core.errors import RainMambaError
from rainmamba_core.models.config import LATE_KEYS


class BlendError(RainMambaError, ValueError):
    """Two models that cannot be blended, or a share outside [0, 1]."""


def blend_state_dicts(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * tuned`` per floating-point tensor; other tensors must be equal.

    Raises:
        BlendError: alpha outside [0, 1], keys missing on either side, shapes or dtypes that
            differ, or unequal integer tensors (each listed).
    """
    if not 0.0 <= alpha <= 1.0:
        raise BlendError(f'alpha={alpha}: expected a share in [0, 1] (0 = the base, 1 = the fine-tune)')
    only_base, only_tuned = sorted(set(base) - set(tuned)), sorted(set(tuned) - set(base))
    if only_base or only_tuned:
        raise BlendError('the two models have different keys: only in the base: '
                         f'{", ".join(only_base) or "none"}; only in the fine-tune: {", ".join(only_tuned) or "none"}')
    bad = [f'{k} {tuple(base[k].shape)}/{base[k].dtype} vs {tuple(tuned[k].shape)}/{tuned[k].dtype}'
           for k in base if base[k].shape != tuned[k].shape or base[k].dtype != tuned[k].dtype]
    if bad:
        raise BlendError('shapes or dtypes differ: ' + '; '.join(bad))
    unequal = [k for k in base if not base[k].is_floating_point() and not torch.equal(base[k], tuned[k])]
    if unequal:
        raise BlendError(f'integer tensors differ (they cannot be averaged): {", ".join(unequal)}')
    return {k: (torch.lerp(v, tuned[k], alpha) if v.is_floating_point() else v.clone()) for k, v in base.items()}


# Config keys that change what a layer is shown but add no weights: two models that differ only in
# them still blend (a fine-tune that switched one on from its base), and the blend takes the
# fine-tune's value.
WEIGHT_FREE_KEYS = ('detail_align_thin', 'detail_align_tiles', 'novelty_clamp', 'novelty_clamp_fade',
                    'novelty_clamp_frames')


def _training_summary(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True).get('training') or {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split('\n\n')[0]
    parser.add_argument('base', help="the model the fine-tune started from (or a sibling trained from the same "
                                     "model): a .pt checkpoint, or 'default' for the bundled model")
    parser.add_argument('tuned', help="the fine-tuned model (.pt checkpoint, the same architecture), or 'default'")
    parser.add_argument('--alpha', type=float, required=True,
                        help='how far towards the fine-tune, 0-1 (0 = the base, 1 = the fine-tune)')
    parser.add_argument('--out', required=True, help='the blended checkpoint to write (.pt)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', dest='settings',
                        help='set an option that adds no weights on the result (repeatable): '
                             + ', '.join(WEIGHT_FREE_KEYS) + '; e.g. --set novelty_clamp=0 switches the '
                             'novelty clamp off')


def parse_settings(items: list[str]) -> dict[str, float | int]:
    """``KEY=VALUE`` strings -> {key: number} for `WEIGHT_FREE_KEYS` (refused otherwise, with why)."""
    out: dict[str, float | int] = {}
    for item in items:
        key, eq, value = item.partition('=')
        key = key.strip()
        if not eq or key not in WEIGHT_FREE_KEYS:
            raise BlendError(f'--set {item!r}: expected KEY=VALUE with KEY one of {", ".join(WEIGHT_FREE_KEYS)} '
                             '(options that add no weights; the weights come from the two models)')
        try:
            out[key] = type(LATE_KEYS[key])(value)   # each key's type is that of its default
        except ValueError:
            raise BlendError(f'--set {item!r}: {value!r} is not a number') from None
    return out


def run(args: argparse.Namespace) -> int:
    from rainmamba_core.models.rainmamba import RainMamba
    from rainmamba_core.paths import DEFAULT_MODEL
    base_path = DEFAULT_MODEL if args.base == 'default' else Path(args.base)
    tuned_path = DEFAULT_MODEL if args.tuned == 'default' else Path(args.tuned)
    settings = parse_settings(getattr(args, 'settings', []))
    out = Path(args.out)
    if out.suffix not in ('.pt', '.pth'):
        raise BlendError(f'--out {out}: expected a .pt or .pth file name')
    if out.resolve() in (base_path.resolve(), tuned_path.resolve()):
        raise BlendError(f'--out {out} is one of the inputs: write the blend to a new file')
    base = RainMamba.from_checkpoint(base_path)
    tuned = RainMamba.from_checkpoint(tuned_path)
    # every field (to_dict leaves out late keys at their default, which would read as None here)
    a, b = dataclasses.asdict(base.config), dataclasses.asdict(tuned.config)
    # a key that adds no weights (what the head is shown) may differ: the blend runs the fine-tune's
    taken = [f'{k}: {a[k]!r} -> {b[k]!r}' for k in WEIGHT_FREE_KEYS if a.get(k) != b.get(k)]
    differ = [f'{k}: {a.get(k)!r} vs {b.get(k)!r}' for k in sorted(set(a) | set(b))
              if a.get(k) != b.get(k) and k not in WEIGHT_FREE_KEYS]
    if differ:
        raise BlendError(f'{base_path} and {tuned_path} have different architectures ({"; ".join(differ)}): '
                         'only models trained from one model (a fine-tune and its base, or two fine-tunes '
                         'of it) can be blended')
    if taken:
        print(f'rainmamba blend: the blend takes the fine-tune\'s {"; ".join(taken)} (no weights depend on it)')
    # the fine-tune's config is the blend's (the same as the base's but for the keys taken above), so
    # the blended weights go into the fine-tune's model
    blended = tuned
    blended.load_state_dict(blend_state_dicts(base.state_dict(), tuned.state_dict(), args.alpha))
    if settings:
        from rainmamba_core.models.config import ConfigError, RainMambaConfig
        try:  # checked as a whole (the clamp needs the aligned head, ranges)
            config = RainMambaConfig.from_dict({**dataclasses.asdict(tuned.config), **settings})
        except ConfigError as exc:
            raise BlendError(f'--set {", ".join(f"{k}={v}" for k, v in settings.items())}: {exc}') from None
        blended = RainMamba(config)
        blended.load_state_dict(tuned.state_dict())
        print('rainmamba blend: set ' + ', '.join(f'{k}={v}' for k, v in settings.items()))
    # each input's own training summary goes along, so a blend of blends still says how every
    # part of it was trained (the bundled default is one: scripts/train_default.sh)
    blended.save_checkpoint(out, extra={'training': {'blend': {
        'base': str(args.base), 'tuned': str(args.tuned), 'alpha': float(args.alpha),
        'base_training': _training_summary(base_path), 'tuned_training': _training_summary(tuned_path),
        **({'set': settings} if settings else {})}}})
    print(f'rainmamba blend: {1 - args.alpha:g} x {args.base} + {args.alpha:g} x {args.tuned} -> {out}')
    return 0
