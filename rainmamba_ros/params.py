"""The derain node's parameters: one table, validated without rclpy.

Each parameter says how it may change while the node runs:
- 'live': applied immediately (enabled, thresholds, diagnostics period, ...);
- 'reload': accepted at run time by building a new Derainer with the new settings *before*
  swapping it in; if the build fails the change is refused with the Derainer's reason and the old
  model keeps running. Stream states restart after a reload (counted as resets.reload);
- 'restart': read-only after start (topics and QoS are wired once); set them in the YAML file or
  on the command line.

The model parameters are generated from the core's one table of Derainer options
(rainmamba_core.options), which `rainmamba replay` and `rainmamba derain` read too.
`config/derain.yaml`, docs/ros.md and the node's ParameterDescriptors are all checked against
`PARAMS` by the tests.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rainmamba_core import options
from rainmamba_core.options import (
    DERAINER_OPTIONS,
    OPTIONS,
    DerainerOption,
    OptionError,
    check_option,
    check_options,
    check_value,
)


class ParameterError(OptionError):
    """A parameter value (or combination) the node refuses; the message is the reason."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        name: parameter name.
        default: default value (its Python type is the parameter type).
        description: one line for the ParameterDescriptor and the docs.
        change: 'live' | 'reload' | 'restart'.
        choices: allowed strings, if an enumeration.
        int_range: inclusive (min, max) for integers.
        float_range: inclusive (min, max) for floats.
    """

    name: str
    default: Any
    description: str
    change: str
    choices: tuple[str, ...] | None = None
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None


def _from_option(opt: DerainerOption) -> ParamSpec:
    """A [reload] node parameter from the core's DerainerOptions table."""
    rng = opt.range
    return ParamSpec(opt.name, opt.ros_default, opt.help, 'reload', choices=opt.choices,
                     int_range=(int(rng[0]), int(rng[1])) if rng and opt.type is int else None,
                     float_range=(float(rng[0]), float(rng[1])) if rng and opt.type is float else None)


PARAMS: tuple[ParamSpec, ...] = (
    # --- topics and QoS (wired once)
    ParamSpec('cameras', [''], 'Camera namespaces; each gets <cam>/image and <cam>/camera_info '
              "in, <cam>/derained/image and <cam>/derained/camera_info out. '' = the node "
              'namespace.', 'restart'),
    ParamSpec('input_transport', 'raw', "'raw' subscribes sensor_msgs/Image on <cam>/image; "
              "'compressed' subscribes sensor_msgs/CompressedImage on <cam>/image/compressed.",
              'restart', choices=('raw', 'compressed')),
    ParamSpec('input_reliability', 'best_effort', 'Input QoS reliability. best_effort matches '
              'every publisher (sensor-data QoS); reliable does not match best_effort drivers.',
              'restart', choices=('best_effort', 'reliable')),
    ParamSpec('input_depth', 5, 'Input QoS history depth (the node keeps only the newest frame '
              'per camera anyway).', 'restart', int_range=(1, 100)),
    ParamSpec('output_reliability', 'reliable', 'Output QoS reliability (reliable matches rviz '
              'and most subscribers); qos_overrides.<topic>.publisher.* can override it.',
              'restart', choices=('best_effort', 'reliable')),
    ParamSpec('output_depth', 5, 'Output QoS history depth.', 'restart', int_range=(1, 100)),
    # --- the model (a change builds a new Derainer and swaps it in): rainmamba_core.options
    *(_from_option(o) for o in DERAINER_OPTIONS),
    # --- behaviour at run time
    ParamSpec('gap_reset_s', 1.0, "Reset a camera's stream state when the header stamps of two "
              'consecutive frames the camera sent (received, processed or not) are further apart '
              'than this (s).', 'live', float_range=(0.001, 3600.0)),
    ParamSpec('time_jump_reset_s', 1.0, "Reset every stream when the node's clock (ROS time, "
              '/clock with use_sim_time) jumps backwards, or forwards by more than this (s); '
              '0 disables.', 'live', float_range=(0.0, 3600.0)),
    ParamSpec('enabled', True, 'Derain (true) or pass frames through unchanged (false); also '
              'the ~/enable service.', 'live'),
    ParamSpec('passthrough_on_error', True, 'On an inference failure (the stream is reset): '
              'publish the input frame unchanged (true) or skip it (false).', 'live'),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics report (s).', 'live',
              float_range=(0.1, 60.0)),
    ParamSpec('latency_warn_ms', 250.0, 'WARN when latency p99 (header stamp to publish) '
              'exceeds this (ms).', 'live', float_range=(1.0, 600000.0)),
    ParamSpec('rate_warn_ratio', 0.9, 'WARN when the output rate falls below this fraction of '
              'the input rate.', 'live', float_range=(0.0, 1.0)),
    ParamSpec('error_throttle_s', 5.0, 'Minimum seconds between two logged rejections or '
              'failures (each is still counted).', 'live', float_range=(0.1, 3600.0)),
)

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMS}
# Parameters handed to the Derainer constructor, by the same names.
DERAINER_KEYS: tuple[str, ...] = tuple(OPTIONS)

_NAMESPACE = re.compile(r'^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')


def validate_one(name: str, value: Any) -> None:
    """Check a single parameter on its own (type, choices, range, format).

    Raises:
        ParameterError: naming the parameter, the value and what is allowed.
    """
    spec = SPECS.get(name)
    if spec is None:
        return  # not ours (use_sim_time, qos_overrides.*): rclpy validates those
    if name in OPTIONS:
        try:
            check_option(name, value)
        except OptionError as exc:
            raise ParameterError(str(exc)) from exc
        return
    check_value(name, value, type(spec.default), spec.choices, spec.int_range or spec.float_range,
                error=ParameterError)
    if name == 'cameras':
        if not value:
            raise ParameterError("cameras is empty: give at least one namespace ('' = the "
                                 'node namespace)')
        if len(set(value)) != len(value):
            raise ParameterError(f'cameras {value} lists a namespace twice')
        for cam in value:
            if cam and not _NAMESPACE.match(cam):
                raise ParameterError(f"cameras entry '{cam}' is not a valid ROS namespace "
                                     '(letters, digits, _ and /, not starting with a digit, no '
                                     'trailing /)')


def validate_all(values: dict[str, Any]) -> None:
    """Check every parameter and the combinations between them.

    Args:
        values: {name: value} for (at least) every name in PARAMS.

    Raises:
        ParameterError: the first problem found.
    """
    for name, value in values.items():
        validate_one(name, value)
    try:
        check_options({k: values[k] for k in DERAINER_KEYS})
    except OptionError as exc:
        raise ParameterError(str(exc)) from exc


def derainer_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Derainer constructor arguments from the node's parameter values."""
    return options.derainer_kwargs({k: values[k] for k in DERAINER_KEYS})
