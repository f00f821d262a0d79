"""DerainerOptions: the Derainer's settings in one table, read by every front end.

The ROS node declares its model parameters from it (in rainmamba_ros), `rainmamba replay`
and `rainmamba derain` generate their flags from it (`add_derainer_arguments`), and all three
check values and combinations with the same functions, so a setting means the same thing, with
the same range and help, wherever it is given.

Defaults: `default` is the Derainer's own (the offline front ends). The node differs in two,
said in `node_default`: a fixed window of 5 frames (a ROS parameter cannot be "unset") and an
automatic pixel budget (a robot's CPU must keep up with its camera; offline, quality wins).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from rainmamba_core.devices import DEVICE_PATTERN
from rainmamba_core.errors import RainMambaError
from rainmamba_core.models.config import RUN_TIME_KEYS

_SAME = object()


class OptionError(RainMambaError, ValueError):
    """A Derainer option value (or combination) that is refused; the message is the reason."""


@dataclass(frozen=True)
class DerainerOption:
    """One Derainer setting.

    Attributes:
        name: the Derainer keyword, the ROS parameter and the flag's destination.
        type: str, int, float or bool (a bool is a switch: a flag without a value).
        default: the Derainer's default (None: unset, the model's own).
        help: one line for --help, the ParameterDescriptor and the docs.
        choices: allowed values, if an enumeration.
        range: inclusive (min, max) for numbers.
        flag: the command-line flag (default: --name with dashes).
        node_default: the node's default where it differs from `default`.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None
    flag: str | None = None
    node_default: Any = _SAME

    @property
    def cli_flag(self) -> str:
        return self.flag or '--' + self.name.replace('_', '-')

    @property
    def ros_default(self) -> Any:
        return self.default if self.node_default is _SAME else self.node_default


DERAINER_OPTIONS: tuple[DerainerOption, ...] = (
    DerainerOption('model_path', str, '', "Model file (.pt checkpoint or .onnx); '' = the bundled default "
                   'model.', flag='--model'),
    DerainerOption('mode', str, 'streaming', "'streaming' = causal, one step per frame (constant cost); "
                   "'windowed' = the paper's sliding window over the last `window` frames.",
                   choices=('streaming', 'windowed')),
    DerainerOption('window', int, None, 'Frames per window in windowed mode.', range=(1, 64), node_default=5),
    DerainerOption('backend', str, 'torch', 'Inference backend.', choices=('torch', 'onnxruntime')),
    DerainerOption('device', str, 'auto', "'auto' (cuda when available, else cpu), 'cpu', 'cuda' or "
                   "'cuda:N'."),
    DerainerOption('precision', str, 'fp32', 'fp32, or fp16/bf16 (cuda only).',
                   choices=('fp32', 'fp16', 'bf16')),
    DerainerOption('max_size', int, 0, 'If > 0, frames whose long side exceeds it are derained downscaled '
                   'and resized back.', range=(0, 16384)),
    DerainerOption('max_pixels', int, 0, 'Pixel budget per frame: larger frames are derained downscaled '
                   '(aspect kept) and resized back. -1 = auto (640x480 = 307200 on the CPU, no limit '
                   'on CUDA), 0 = no limit.', range=(-1, 1_000_000_000), node_default=-1),
    DerainerOption('flip_ensemble', bool, False, 'Also derain every frame mirrored left to right (with '
                   'its own carried state) and average the two: better on every rain set of the model '
                   "card's suite (NTURain a2 +0.16 dB with the bundled model) at twice the compute."),
    DerainerOption('novelty_clamp', float, -1.0, 'Novelty clamp (models with an aligned detail head; no '
                   'weights): on frames the model changes by at most this many grey levels on average, its '
                   'change is limited to what is new against two earlier frames aligned onto the frame '
                   '(clean frames come back closer to themselves). -1 = the model file\'s own (1.0 in the '
                   'bundled default), 0 = off. An .onnx file has it fixed at export.', range=(-1.0, 255.0)),
    DerainerOption('detail_align_tiles', int, -1, 'How the aligned detail head (models with one, such as '
                   'the bundled) moves earlier frames onto each frame: 0 = one shift for the whole frame, 2-4 = '
                   'one shift per tile of N x N, which follows objects that move on their own (no weights; '
                   'the bundled model +0.09 dB on its held-out videos, 1.01x the time). -1 = the model '
                   "file's own (0 in the bundled default). An .onnx file has it fixed at export.",
                   range=(-1, 4)),
)

OPTIONS: dict[str, DerainerOption] = {o.name: o for o in DERAINER_OPTIONS}


def _type_name(value: Any) -> str:
    return 'string array' if isinstance(value, list) else type(value).__name__


def check_value(name: str, value: Any, want: type, choices: tuple[Any, ...] | None = None,
                bounds: tuple[float, float] | None = None, error: type[OptionError] = OptionError) -> None:
    """Type (an int is a float too; a bool is not an int), choices and inclusive range of a setting.

    Raises:
        error: naming the setting, the value and what is allowed.
    """
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise error(f'{name}={value!r} has type {_type_name(value)}, expected '
                    f'{"string array" if want is list else want.__name__}')
    if choices and value not in choices:
        raise error(f"{name}='{value}' is not one of {', '.join(choices)}")
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise error(f'{name}={value} is outside [{bounds[0]}, {bounds[1]}]')


def check_option(name: str, value: Any) -> None:
    """Check one option on its own (type, choices, range, format); None means unset.

    Raises:
        OptionError: naming the option, the value and what is allowed.
    """
    opt = OPTIONS[name]
    if value is None and opt.default is None:
        return
    check_value(name, value, opt.type, opt.choices, opt.range)
    if name == 'device' and not DEVICE_PATTERN.match(value):
        raise OptionError(f"device='{value}' is not auto, cpu, cuda or cuda:N")
    if name == 'novelty_clamp' and -1.0 < value < 0.0:
        raise OptionError(f'novelty_clamp={value} is between -1 and 0: give -1 (the model file\'s own), '
                          '0 (off) or a mean change in grey levels > 0')
    if name == 'detail_align_tiles' and value == 1:
        raise OptionError('detail_align_tiles=1 is one tile: give 0 (one shift for the frame), 2-4 (tiles a side) '
                          "or -1 (the model file's own)")
    if name == 'model_path' and value and not value.endswith(('.pt', '.pth', '.onnx')):
        raise OptionError(f"model_path='{value}' should be a .pt/.pth checkpoint or an .onnx "
                          "file ('' = the bundled default model)")


def check_options(values: dict[str, Any]) -> None:
    """Check every option given and the combinations between them.

    Raises:
        OptionError: the first problem found.
    """
    for name, value in values.items():
        if name in OPTIONS:
            check_option(name, value)
    device, precision = values.get('device', 'auto'), values.get('precision', 'fp32')
    if precision != 'fp32' and device == 'cpu':
        raise OptionError(f"precision='{precision}' needs a CUDA device, but device='cpu': "
                          "use precision='fp32' on the CPU")
    model_path = values.get('model_path') or ''
    if values.get('backend') == 'onnxruntime' and model_path and not model_path.endswith('.onnx'):
        raise OptionError(f"backend='onnxruntime' needs an .onnx model_path, got '{model_path}'")
    window = values.get('window')
    if values.get('mode') == 'windowed' and window is not None and window < 2:
        raise OptionError(f"mode='windowed' needs window >= 2, got {window}")


def derainer_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Derainer constructor arguments from option values (by name; '' model_path = bundled)."""
    kw = {o.name: values[o.name] for o in DERAINER_OPTIONS if o.name in values}
    if 'model_path' in kw:
        kw['model_path'] = kw['model_path'] or None
    for name in RUN_TIME_KEYS:
        if kw.get(name) is not None and kw[name] < 0:
            kw[name] = None  # -1: the model file's own
    return kw


def _flag_type(opt: DerainerOption):
    def parse(text: str) -> Any:
        try:
            value = opt.type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected {opt.type.__name__}, got {text!r}') from None
        try:
            check_option(opt.name, value)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    parse.__name__ = opt.type.__name__
    return parse


def add_derainer_arguments(parser: argparse.ArgumentParser | Any,
                           overrides: dict[str, dict[str, Any]] | None = None) -> None:
    """Add one flag per Derainer option to `parser` (or an argument group).

    Args:
        overrides: per option name, argparse keywords that replace the table's (e.g. `derain`'s
            --mode, which adds 'tiled'); the destination stays the option's name.
    """
    for opt in DERAINER_OPTIONS:
        default = opt.default if opt.default is not None else None
        shown = 'the model\'s own' if default is None else ("'' (bundled)" if default == '' else default)
        kw: dict[str, Any] = {'dest': opt.name, 'default': default, 'type': _flag_type(opt),
                              'help': f'{opt.help} Default: {shown}.'}
        if opt.type is bool:  # a switch: --flip-ensemble turns it on
            kw = {'dest': opt.name, 'default': default, 'action': 'store_true', 'help': f'{opt.help} Default: off.'}
        if opt.choices:
            kw['choices'] = opt.choices
            kw.pop('type')
        kw.update((overrides or {}).get(opt.name, {}))
        parser.add_argument(opt.cli_flag, **kw)


def options_from_args(args: argparse.Namespace, unchecked: tuple[str, ...] = ()) -> dict[str, Any]:
    """The option values parsed by `add_derainer_arguments`, checked together.

    Args:
        unchecked: names a front end widened with `overrides` (e.g. `derain`'s --mode tiled).

    Raises:
        OptionError: a combination that is refused (e.g. fp16 on the CPU).
    """
    values = {o.name: getattr(args, o.name) for o in DERAINER_OPTIONS if hasattr(args, o.name)}
    check_options({k: v for k, v in values.items() if v is not None and k not in unchecked})
    return values
