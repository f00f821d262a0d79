"""The messages the derain node builds, as pure functions: topic names beside the input,
derained images, parameter descriptors and diagnostic statuses."""
from __future__ import annotations

import math
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from rainmamba_ros.conversions import as_msg_data, rgb_to_image_fields
from rainmamba_ros.params import ParamSpec

_LEVELS = {'OK': DiagnosticStatus.OK, 'WARN': DiagnosticStatus.WARN,
           'ERROR': DiagnosticStatus.ERROR, 'STALE': DiagnosticStatus.STALE}


def join_topic(cam: str, leaf: str) -> str:
    """<cam>/<leaf>, or <leaf> for the node namespace ('')."""
    return f'{cam}/{leaf}' if cam else leaf


def derained_topics(input_topic: str) -> tuple[str, str]:
    """(image, camera_info) output topics beside a resolved input topic.

    /front/image_raw -> /front/derained/image; /front/image_raw/compressed -> the same;
    /image -> /derained/image.
    """
    base = input_topic[:-len('/compressed')] if input_topic.endswith('/compressed') else input_topic
    parent = base.rsplit('/', 1)[0]
    return f'{parent}/derained/image', f'{parent}/derained/camera_info'


def stamp_ns(header: Any) -> int:
    """A header stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_message(src: Any, rgb: Any, encoding: str, alpha: Any) -> Image:
    """A sensor_msgs/Image of `rgb` ((H, W, 3) uint8) in `encoding`, with `src`'s header."""
    flat, step = rgb_to_image_fields(rgb, encoding, alpha)
    out = Image()
    out.header = src.header
    out.height, out.width = int(rgb.shape[0]), int(rgb.shape[1])
    out.encoding = encoding
    out.is_bigendian = 0  # 8-bit encodings only: byte order is irrelevant
    out.step = step
    out.data = as_msg_data(flat)
    return out


def parameter_descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of a node parameter: description, change rule, choices, range."""
    change = {'live': 'changeable at run time',
              'reload': 'changeable at run time (rebuilds the model; refused if it fails)',
              'restart': 'read-only after start'}[spec.change]
    desc = ParameterDescriptor(description=f'{spec.description} [{change}]',
                               read_only=spec.change == 'restart')
    if spec.choices:
        desc.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.int_range:
        desc.integer_range = [IntegerRange(from_value=spec.int_range[0],
                                           to_value=spec.int_range[1], step=1)]
    if spec.float_range:
        desc.floating_point_range = [FloatingPointRange(from_value=spec.float_range[0],
                                                        to_value=spec.float_range[1], step=0.0)]
    return desc


def _fmt(value: Any) -> str:
    """A diagnostic value as text (bools as true/false, floats to 3 decimals)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return 'nan' if math.isnan(value) else f'{value:.3f}'
    return str(value)


def diagnostic_status(name: str, hardware_id: str, level: str, message: str,
                      values: dict[str, Any]) -> DiagnosticStatus:
    """A DiagnosticStatus; level is 'OK' | 'WARN' | 'ERROR' | 'STALE'."""
    status = DiagnosticStatus()
    status.level = _LEVELS[level]
    status.name = name
    status.message = message
    status.hardware_id = hardware_id
    status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
    return status


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    """Keep-last QoS of `depth` with 'best_effort' or 'reliable' reliability."""
    rel = ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort' else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel)
