"""ROS 2 node that derains camera topics in real time with the RainMamba `Derainer`.

Per camera namespace `<cam>` (parameter `cameras`, '' = the node namespace):
  in:  <cam>/image (sensor_msgs/Image) or <cam>/image/compressed (CompressedImage),
       <cam>/camera_info (optional)
  out: beside the input as remapped: <parent>/derained/image (same header, same encoding) and
       <parent>/derained/camera_info, where <parent> is the namespace of the resolved input
       topic (/front/image_raw -> /front/derained/image)
Services ~/reset (std_srvs/Trigger), ~/enable (std_srvs/SetBool); /diagnostics at
`diagnostics_period_s`.

Threads: subscription callbacks (one mutually exclusive group) only validate a message's
geometry, note its stamp in the camera's timeline (a gap or a jump back is judged there, between
frames the camera sent) and overwrite that camera's slot in a keep-latest mailbox; one worker
thread takes the newest frame of every camera, converts it, runs `Derainer.process_batch`
(cameras of equal size batched) and publishes. Services, parameters and diagnostics run in a
second group, so a slow model never blocks them. The logic (slots, stats, parameter validation,
conversions) lives in pure modules.

Transport: `main` gives the node's Fast DDS participant the shipped profile for large images
(config/fastdds_large_images.xml) unless one is set, so its output reaches other processes; input
images lost on the way are detected through their camera_info (`images_missing`, a WARN).
"""
from __future__ import annotations

import copy
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import JumpHandle, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy_impl
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool, Trigger

from rainmamba_core.errors import RainMambaError
from rainmamba_core.streaming.timeline import StampTimeline
from rainmamba_ros.conversions import (
    ImageConversionError,
    as_msg_data,
    check_image,
    compressed_source_encoding,
    compressed_to_rgb,
    conversion_backend,
    extract_alpha,
    image_to_rgb,
    rgb_to_image_fields,
)
from rainmamba_ros.latest import LatestFrames
from rainmamba_ros.params import (
    DERAINER_KEYS,
    PARAMS,
    SPECS,
    ParameterError,
    ParamSpec,
    derainer_kwargs,
    validate_all,
    validate_one,
)
from rainmamba_ros.stats import CameraStats, InputLossMonitor, assess

_LEVELS = {'OK': DiagnosticStatus.OK, 'WARN': DiagnosticStatus.WARN,
           'ERROR': DiagnosticStatus.ERROR, 'STALE': DiagnosticStatus.STALE}

TRANSPORT_PROFILE = 'fastdds_large_images.xml'
PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
_PROFILE_HINT = ('$(ros2 pkg prefix rainmamba_ros)/share/rainmamba_ros/config/'
                 + TRANSPORT_PROFILE)


def shipped_transport_profile() -> Path | None:
    """The package's Fast DDS profile for large images: installed share/ or the source tree."""
    candidates = [Path(__file__).resolve().parents[1] / 'config' / TRANSPORT_PROFILE,
                  Path(sys.prefix) / 'share' / 'rainmamba_ros' / 'config' / TRANSPORT_PROFILE]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.insert(0, Path(get_package_share_directory('rainmamba_ros')) / 'config'
                          / TRANSPORT_PROFILE)
    except Exception:  # no ament index (pip install): the other places
        pass
    return next((c for c in candidates if c.is_file()), None)


def apply_transport_profile(environ: Any = os.environ) -> str:
    """Give this process's Fast DDS participants the shipped large-image profile, unless the
    user chose a profile (either variable set, even empty) or another RMW. Call before
    rclpy.init. Returns one line saying what was chosen, for the log."""
    rmw = environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')  # the ROS 2 default RMW
    if not rmw.startswith('rmw_fastrtps'):
        return f'transport: {rmw} (the Fast DDS profile for large images does not apply)'
    for var in PROFILE_VARS:
        if var in environ:
            return f'transport: Fast DDS profile from {var}={environ[var]!r}'
    path = shipped_transport_profile()
    if path is None:
        return (f'transport: Fast DDS defaults ({TRANSPORT_PROFILE} not found): images above '
                '512 KiB may not reach other processes')
    environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(path)
    return (f'transport: Fast DDS profile {path} (16 MiB shared memory) for this node, so its '
            'large output reaches other processes; the camera driver needs it too: export '
            f'FASTDDS_DEFAULT_PROFILES_FILE={path} before starting it')


class DerainNodeError(RainMambaError, RuntimeError):
    """The node cannot start (or reload): bad parameters or a model that does not load.

    Attributes:
        exit_code: 2 for parameter problems, 1 for a model that does not build.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _join(cam: str, leaf: str) -> str:
    return f'{cam}/{leaf}' if cam else leaf


def derained_topics(input_topic: str) -> tuple[str, str]:
    """(image, camera_info) output topics beside a resolved input topic.

    /front/image_raw -> /front/derained/image; /front/image_raw/compressed -> the same;
    /image -> /derained/image.
    """
    base = input_topic[:-len('/compressed')] if input_topic.endswith('/compressed') else input_topic
    parent = base.rsplit('/', 1)[0]
    return f'{parent}/derained/image', f'{parent}/derained/camera_info'


def _quiet_opencv() -> None:
    """Silence OpenCV's own log (below FATAL) in the node's process.

    OpenCV prints an unthrottled `[ERROR:0@...] grfmt_png.cpp ...` line for every undecodable
    compressed frame; the node already reports each one itself (rejected.decode, logged at most
    once per error_throttle_s). libjpeg's "Corrupt JPEG data" warnings bypass OpenCV's log and
    still reach stderr.
    """
    import cv2
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    except AttributeError:  # an OpenCV build without utils.logging: its log stays as it is
        pass


def _stamp_ns(header: Any) -> int:
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


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
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


@dataclass
class _Camera:
    """Topics, publishers and bookkeeping of one camera namespace."""

    name: str
    stream_id: str                    # resolved (remapped) input topic: unique per camera
    stats: CameraStats
    timeline: StampTimeline           # stamps of the frames received (callback thread only)
    breaks_applied: int = 0           # timeline breaks already turned into resets (worker only)
    pub_image: Any = None
    pub_info: Any = None
    infos: deque = field(default_factory=lambda: deque(maxlen=16))
    reported: dict = field(default_factory=dict)   # counters at the previous diagnostics report
    loss: InputLossMonitor = field(default_factory=InputLossMonitor)
    reported_missing: int = 0                      # images_missing at the previous report


class _Received(NamedTuple):
    """One camera frame waiting in the keep-latest mailbox."""

    cam: _Camera
    msg: Any
    t_in: float                       # monotonic time of reception
    breaks: int = -1                  # the camera's timeline breaks up to this frame (-1: unknown)
    reason: str = ''                  # reason and detail of the latest of them
    detail: str = ''


class _RosLogHandler(logging.Handler):
    """Forward Python `logging` from rainmamba_core (e.g. Derainer resets) to the node logger."""

    def __init__(self, node: Node) -> None:
        super().__init__(logging.INFO)
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        text = f'[{record.name}] {record.getMessage()}'
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        else:
            self._logger.info(text)


class DerainNode(Node):
    """Derain every configured camera; see the module docstring for topics and threads.

    Args:
        node_name: the node's name.
        derainer: a ready `Derainer` to use instead of building one from the model parameters
            (an application embedding the node, or a test with a stand-in model); a later
            change of a [reload] parameter replaces it with one built from the parameters.
        **kwargs: rclpy `Node` arguments (context, parameter_overrides, ...).
    """

    def __init__(self, node_name: str = 'derain_node', derainer: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._ready = False
        self._log_handler = _RosLogHandler(self)
        for name in ('rainmamba_core', 'rainmamba_ros'):
            logging.getLogger(name).addHandler(self._log_handler)
            logging.getLogger(name).setLevel(logging.INFO)
        _quiet_opencv()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self._cfg: dict[str, Any] = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        try:
            validate_all(self._cfg)
        except ParameterError as exc:
            raise DerainNodeError(f'invalid parameters: {exc}', exit_code=2) from exc

        self._derainer_lock = threading.Lock()
        self._derainer = derainer if derainer is not None else self._build_derainer(self._cfg)
        self._resets_base: dict[str, int] = {}   # Derainer resets from models replaced by reloads
        self._node_resets: dict[str, int] = {'service': 0, 'enable': 0, 'clock_jump': 0,
                                             'inference_error': 0, 'reload': 0}

        self._io_group = MutuallyExclusiveCallbackGroup()    # subscriptions: store only
        self._ctl_group = MutuallyExclusiveCallbackGroup()   # services, timers
        self._slots: LatestFrames[tuple[_Camera, Any, float]] = LatestFrames()
        self._cameras: list[_Camera] = []
        self._compressed = self._cfg['input_transport'] == 'compressed'
        profile = shipped_transport_profile() or _PROFILE_HINT
        self._loss_fix = (f'export FASTDDS_DEFAULT_PROFILES_FILE={profile} for the camera driver '
                          '(large best-effort images are dropped by Fast DDS defaults), or check '
                          'that the image topic is remapped like camera_info')
        self._setup_cameras()

        self.create_service(Trigger, '~/reset', self._on_reset, callback_group=self._ctl_group)
        self.create_service(SetBool, '~/enable', self._on_enable, callback_group=self._ctl_group)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self._make_diag_timer()
        self._jump_handle: JumpHandle | None = None
        self._register_jump_callback()

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._worker_loop, name='derain_worker',
                                        daemon=True)
        self._ready = True
        self._worker.start()
        cams = ', '.join(f'{c.stream_id} -> {c.pub_image.topic_name}' for c in self._cameras)
        self.get_logger().info(
            f'deraining {cams} ({self._cfg["input_transport"]} in) with '
            f'{self._derainer.backend_name} on {self._derainer.device}, mode '
            f'{self._cfg["mode"]}; image conversions via {conversion_backend()}')
        self._say_size_bound()

    def _say_size_bound(self) -> None:
        bound = getattr(self._derainer, 'size_bound', None)
        if bound is not None:
            self.get_logger().info(f'size bound: {bound}; frames under {self._derainer.min_size}x'
                                   f'{self._derainer.min_size} are rejected (rejected.size)')

    # ------------------------------------------------------------------ seams (benchmarks, embedding)
    @property
    def cameras(self) -> tuple[_Camera, ...]:
        """The configured cameras, in `cameras` order."""
        return tuple(self._cameras)

    def stop_worker(self) -> None:
        """Stop the worker thread: received frames then stay in the mailbox for `take_received`."""
        self._stop.set()
        self._slots.close()
        if self._worker.is_alive():
            self._worker.join(timeout=3.0)

    def take_received(self, timeout: float | None = 0.0) -> dict[str, _Received]:
        """The newest received frame of every camera (by stream id), emptying the mailbox."""
        return self._slots.take_all(timeout=timeout)

    # ------------------------------------------------------------------ setup
    def _build_derainer(self, cfg: dict[str, Any]) -> Any:
        from rainmamba_core.streaming.derainer import Derainer  # torch import: keep it lazy
        kw = derainer_kwargs(cfg)
        try:
            return Derainer(**kw)
        except Exception as exc:  # DerainerError, missing files, CUDA errors: all refuse clearly
            shown = ', '.join(f'{k}={v!r}' for k, v in kw.items())
            raise DerainNodeError(f'could not build the Derainer ({shown}): '
                                  f'{type(exc).__name__}: {exc}') from exc

    def _qos(self, reliability: str, depth: int) -> QoSProfile:
        rel = (ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
               else ReliabilityPolicy.RELIABLE)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel)

    def _setup_cameras(self) -> None:
        qos_in = self._qos(self._cfg['input_reliability'], self._cfg['input_depth'])
        qos_out = self._qos(self._cfg['output_reliability'], self._cfg['output_depth'])
        for name in self._cfg['cameras']:
            topic = _join(name, 'image/compressed' if self._compressed else 'image')
            cam = _Camera(name=name, stream_id=self.resolve_topic_name(topic),
                          stats=CameraStats(),
                          timeline=StampTimeline(int(self._cfg['gap_reset_s'] * 1e9)))
            # Beside the input whatever the remap, so two cameras never collide (remap the
            # full output name to move it elsewhere).
            out_image, out_info = derained_topics(cam.stream_id)
            cam.pub_image = self.create_publisher(
                Image, out_image, qos_out,
                qos_overriding_options=QoSOverridingOptions.with_default_policies())
            cam.pub_info = self.create_publisher(
                CameraInfo, out_info, qos_out,
                qos_overriding_options=QoSOverridingOptions.with_default_policies())
            msg_type = CompressedImage if self._compressed else Image
            self.create_subscription(msg_type, topic, lambda m, c=cam: self.on_image(c, m),
                                     qos_in, callback_group=self._io_group)
            self.create_subscription(CameraInfo, _join(name, 'camera_info'),
                                     lambda m, c=cam: self._on_info(c, m), qos_in,
                                     callback_group=self._io_group)
            self._cameras.append(cam)

    def _make_diag_timer(self) -> Any:
        return self.create_timer(self._cfg['diagnostics_period_s'], self._publish_diagnostics,
                                 callback_group=self._ctl_group)

    def _register_jump_callback(self) -> None:
        if self._jump_handle is not None:
            self._jump_handle.unregister()
            self._jump_handle = None
        limit = self._cfg['time_jump_reset_s']
        if limit <= 0:
            return
        threshold = JumpThreshold(min_forward=Duration(nanoseconds=int(limit * 1e9)),
                                  min_backward=Duration(nanoseconds=-1_000_000),
                                  on_clock_change=True)
        self._jump_handle = self.get_clock().create_jump_callback(
            threshold, post_callback=self._on_time_jump)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in SPECS}
        try:
            if not self._ready:  # during declare_parameter: single values, combos checked later
                for name, value in changes.items():
                    validate_one(name, value)
                return SetParametersResult(successful=True)
            merged = dict(self._cfg)
            merged.update(changes)
            validate_all(merged)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if any(merged[k] != self._cfg[k] for k in DERAINER_KEYS):
            try:
                new = self._build_derainer(merged)
            except DerainNodeError as exc:
                return SetParametersResult(
                    successful=False, reason=f'{exc}; the previous model keeps running')
            self._swap_derainer(new)
        old = self._cfg
        self._cfg = merged
        if merged['enabled'] != old['enabled']:
            self._slots.clear()
            if merged['enabled']:  # resume from a clean state, not from frames seen long ago
                self._reset_streams('enable')
            self.get_logger().info('deraining enabled' if merged['enabled']
                                   else 'deraining disabled: passing frames through')
        if merged['diagnostics_period_s'] != old['diagnostics_period_s']:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self._make_diag_timer()
        if merged['time_jump_reset_s'] != old['time_jump_reset_s']:
            self._register_jump_callback()
        if merged['gap_reset_s'] != old['gap_reset_s']:
            for cam in self._cameras:
                cam.timeline.gap_ns = int(merged['gap_reset_s'] * 1e9)
        return SetParametersResult(successful=True)

    def _swap_derainer(self, new: Any) -> None:
        with self._derainer_lock:
            old, self._derainer = self._derainer, new
        for reason, n in old.counters['resets'].items():
            self._resets_base[reason] = self._resets_base.get(reason, 0) + n
        self._node_resets['reload'] += 1
        self.get_logger().info(f'model reloaded: {new.backend_name} on {new.device}; stream '
                               'states restart')
        self._say_size_bound()

    # ------------------------------------------------------------------ services / events
    def _reset_streams(self, reason: str) -> None:
        with self._derainer_lock:
            self._derainer.reset(None)
        self._node_resets[reason] += 1

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        self._reset_streams('service')
        streams = self._derainer.counters['streams']
        response.success = True
        response.message = f'reset {streams} stream state(s)'
        self.get_logger().info(f'~/reset: {response.message}')
        return response

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> Any:
        result = self.set_parameters([Parameter('enabled', Parameter.Type.BOOL,
                                                bool(request.data))])[0]
        response.success = result.successful
        response.message = (('deraining enabled' if request.data else 'passthrough: deraining '
                             'disabled') if result.successful else result.reason)
        return response

    def _on_time_jump(self, jump: TimeJump) -> None:
        self._reset_streams('clock_jump')
        self.get_logger().info(f'clock jumped by {jump.delta.nanoseconds / 1e9:+.3f} s: stream '
                               'states reset')

    # ------------------------------------------------------------------ data path
    # rclpy throttles per call site, so rejections and inference failures log from separate
    # lines and a storm of one never hides the other.
    def _reject(self, cam: _Camera, exc: ImageConversionError, received: bool = True) -> None:
        """received: count the message as received too (False in the worker: the callback has)."""
        cam.stats.on_reject(exc.kind, str(exc), received=received)
        self.get_logger().error(f'{cam.stream_id}: rejected message: {exc}',
                                throttle_duration_sec=self._cfg['error_throttle_s'])

    def _on_info(self, cam: _Camera, msg: CameraInfo) -> None:
        cam.infos.append(msg)
        cam.loss.on_info(_stamp_ns(msg.header))

    def on_image(self, cam: _Camera, msg: Any) -> None:
        """Subscription callback: validate geometry only (O(1)) and keep the newest frame."""
        try:
            cam.loss.on_image(_stamp_ns(msg.header))   # it arrived, whatever follows
        except Exception:  # a header that does not read: rejected below
            pass
        try:
            if self._compressed:
                if len(msg.data) == 0:
                    raise ImageConversionError(
                        f"compressed image (format '{msg.format}') has no data", 'size')
                cam.stats.on_input(msg.format, 0, 0)
            else:
                encoding, height, width, _, _ = check_image(msg)
                self._check_min_size(width, height, encoding)
                cam.stats.on_input(encoding, width, height)
        except ImageConversionError as exc:
            self._reject(cam, exc)
            return
        except Exception as exc:  # a message so broken its fields do not even read
            self._reject(cam, ImageConversionError(f'unreadable message: {exc}', 'decode'))
            return
        # Gaps are judged here, between frames the camera sent: the worker skips frames under
        # keep-latest, and a slow model must not look like a stopped camera.
        tl = cam.timeline
        tl.observe(_stamp_ns(msg.header))
        item = _Received(cam, msg, time.monotonic(), tl.breaks, tl.reason, tl.detail)
        if self._slots.put(cam.stream_id, item):
            cam.stats.on_drop()

    def _check_min_size(self, width: int, height: int, encoding: str) -> None:
        low = self._derainer.min_size
        if width < low or height < low:
            raise ImageConversionError(
                f'{encoding} frame {width}x{height} is smaller than the model takes: expected at '
                f'least {low}x{low}', 'size')

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            pending = self._slots.take_all(timeout=0.2)
            if not pending:
                continue
            try:
                self._process(list(pending.values()))
            except Exception as exc:  # never let the worker die: log and go on
                self.get_logger().error(f'worker: unexpected {type(exc).__name__}: {exc}',
                                        throttle_duration_sec=self._cfg['error_throttle_s'])

    def _process(self, pending: list[tuple[_Camera, Any, float]]) -> None:
        enabled = self._cfg['enabled']
        frames: list[tuple[_Camera, Any, float, Any, str, Any]] = []
        for item in pending:
            cam, msg, t_in, breaks, reason, detail = _Received(*item)
            if breaks > cam.breaks_applied:  # the camera's timeline broke before this frame
                cam.breaks_applied = breaks
                with self._derainer_lock:
                    self._derainer.reset(cam.stream_id, reason, detail)
            if not enabled and not self._compressed:
                self.publish(cam, msg, t_in, None, msg, passthrough=True)
                continue
            try:
                if self._compressed:
                    rgb = compressed_to_rgb(msg)
                    encoding = compressed_source_encoding(msg.format) or 'bgr8'
                    alpha = None
                    cam.stats.last_size = f'{rgb.shape[1]}x{rgb.shape[0]}'  # known only now
                    self._check_min_size(rgb.shape[1], rgb.shape[0], msg.format)
                else:
                    rgb, encoding, alpha = image_to_rgb(msg), msg.encoding, extract_alpha(msg)
            except ImageConversionError as exc:
                self._reject(cam, exc, received=False)
                continue
            if not enabled:
                self.publish(cam, msg, t_in, None, image_message(msg, rgb, encoding, alpha),
                              passthrough=True)
                continue
            frames.append((cam, msg, t_in, rgb, encoding, alpha))
        if not frames:
            return
        # No stamps: the stamp rules were applied above, on the frames received (the Derainer's
        # own rule would compare processed frames, which keep-latest spaces by inference time).
        items = [(c.stream_id, rgb, None) for c, m, _, rgb, _, _ in frames]
        results: list[tuple[Any, Exception | None]]
        with self._derainer_lock:
            t0 = time.perf_counter()
            try:
                outs = self._derainer.process_batch(items)
                results = [(o, None) for o in outs]
            except Exception as batch_exc:
                if len(items) == 1:
                    results = [(None, batch_exc)]
                else:  # find which stream failed: retry one by one
                    results = []
                    for item in items:
                        try:
                            results.append((self._derainer.process_batch([item])[0], None))
                        except Exception as exc:
                            results.append((None, exc))
            infer_ms = (time.perf_counter() - t0) * 1e3
        for (cam, msg, t_in, rgb, encoding, alpha), (out, exc) in zip(frames, results):
            if exc is None:
                self.publish(cam, msg, t_in, infer_ms, image_message(msg, out, encoding, alpha))
            else:
                self._inference_failed(cam, msg, t_in, rgb, encoding, alpha, exc)

    def _inference_failed(self, cam: _Camera, msg: Any, t_in: float, rgb: Any, encoding: str,
                          alpha: Any, exc: Exception) -> None:
        with self._derainer_lock:
            try:
                self._derainer.reset(cam.stream_id)
            except Exception:  # the reset is best effort; the failure is already reported
                pass
        self._node_resets['inference_error'] += 1
        passthrough = self._cfg['passthrough_on_error']
        reason = f'{type(exc).__name__}: {exc}'
        cam.stats.on_error(reason, published=passthrough)
        self.get_logger().error(
            f'{cam.stream_id}: inference failed ({reason}); stream reset, frame '
            f'{"passed through" if passthrough else "skipped"}',
            throttle_duration_sec=self._cfg['error_throttle_s'])
        if passthrough:
            out = msg if not self._compressed else image_message(msg, rgb, encoding, alpha)
            self.publish(cam, msg, t_in, None, out, passthrough=True)

    def _camera_info_for(self, cam: _Camera, header: Any) -> CameraInfo | None:
        """The camera_info with the image's stamp, else the newest one re-stamped."""
        infos = list(cam.infos)
        for info in reversed(infos):
            if info.header.stamp == header.stamp:
                return info
        if not infos:
            return None
        info = copy.copy(infos[-1])
        info.header = header
        return info

    def publish(self, cam: _Camera, src: Any, t_in: float, infer_ms: float | None,
                 out: Image, passthrough: bool = False) -> None:
        cam.pub_image.publish(out)
        info = self._camera_info_for(cam, src.header)
        if info is not None:
            cam.pub_info.publish(info)
        stamp = _stamp_ns(src.header)
        if stamp > 0:
            latency_ms = (self.get_clock().now().nanoseconds - stamp) / 1e6
        else:  # unstamped driver: measure from reception instead
            latency_ms = (time.monotonic() - t_in) * 1e3
        cam.stats.on_publish(latency_ms, infer_ms, passthrough=passthrough)

    # ------------------------------------------------------------------ diagnostics
    def resets(self) -> dict[str, int]:
        """Derainer resets by reason (across reloads) plus node-side reset causes.

        Reads the counters without `_derainer_lock`, which the worker holds for a whole
        inference: /diagnostics must report while a slow model runs, not after it.
        """
        current = self._derainer.counters['resets']
        out = {k: current.get(k, 0) + self._resets_base.get(k, 0)
               for k in set(current) | set(self._resets_base)}
        out.update({f'node.{k}': v for k, v in self._node_resets.items()})
        return out

    def diagnostics(self) -> list[DiagnosticStatus]:
        """One DiagnosticStatus per camera."""
        resets = self.resets()
        statuses = []
        for cam in self._cameras:
            snap = cam.stats.snapshot()
            errors = int(snap['inference_errors']) - int(cam.reported.get('inference_errors', 0))
            rejected = int(snap['rejected']) - int(cam.reported.get('rejected', 0))
            cam.reported = snap
            missing = cam.loss.missing()
            missing_new, cam.reported_missing = missing - cam.reported_missing, missing
            fix = self._loss_fix
            if missing_new:
                self.get_logger().warning(
                    f'{cam.stream_id}: {missing} images never arrived although their '
                    f'camera_info did: {fix}', throttle_duration_sec=60.0)
            level, message = assess(snap, self._cfg['latency_warn_ms'],
                                    self._cfg['rate_warn_ratio'], self._cfg['enabled'],
                                    errors_since_last=errors, rejected_since_last=rejected,
                                    missing_since_last=missing_new, loss_fix=fix)
            values = dict(snap)
            values.update(camera_info_received=cam.loss.infos, images_missing=missing)
            values.update({f'resets.{k}': v for k, v in sorted(resets.items())})
            values['resets_total'] = sum(v for k, v in resets.items()
                                         if not k.startswith('node.'))
            values.update(enabled=self._cfg['enabled'], mode=self._cfg['mode'],
                          backend=self._derainer.backend_name, device=self._derainer.device,
                          input_topic=cam.stream_id)
            status = DiagnosticStatus()
            status.level = _LEVELS[level]
            status.name = f'{self.get_name()}: {cam.stream_id}'
            status.message = message
            status.hardware_id = cam.stream_id
            status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
            statuses.append(status)
        return statuses

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = self.diagnostics()
        self._diag_pub.publish(msg)

    # ------------------------------------------------------------------ shutdown
    def destroy_node(self) -> None:
        """Stop the worker before the publishers go away."""
        if getattr(self, '_stop', None) is not None:
            self._stop.set()
            self._slots.close()
            if self._worker.is_alive():
                self._worker.join(timeout=3.0)  # daemon: never blocks exit beyond this
        for name in ('rainmamba_core', 'rainmamba_ros'):
            logging.getLogger(name).removeHandler(self._log_handler)
        super().destroy_node()


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return 'nan' if math.isnan(value) else f'{value:.3f}'
    return str(value)


def check_params_files(argv: list[str]) -> None:
    """Refuse a `--params-file` that names no file, with the path as the node would open it.

    Raises:
        DerainNodeError: (exit code 2) naming the file and the working directory.
    """
    for flag, value in zip(argv, argv[1:]):
        if flag == '--params-file' and not Path(value).is_file():
            where = '' if Path(value).is_absolute() else f' (relative to {Path.cwd()})'
            raise DerainNodeError(f'--params-file {value}: no such file{where}; give the path '
                                  'of a YAML file of derain_node parameters, e.g. the package\'s '
                                  'config/derain.yaml', exit_code=2)


def main(args: list[str] | None = None) -> int:
    """Console script `derain_node`: spin a DerainNode on a MultiThreadedExecutor."""
    try:
        check_params_files(list(sys.argv if args is None else args))
        transport = apply_transport_profile()   # before rclpy.init creates the participant
        rclpy.init(args=args)
    except DerainNodeError as exc:
        rclpy.logging.get_logger('derain_node').fatal(str(exc))
        return exc.exit_code
    except _rclpy_impl.RCLError as exc:  # rcl refused the command line (an unparsable file)
        rclpy.logging.get_logger('derain_node').fatal(f'invalid command line: {exc}')
        return 2
    node: DerainNode | None = None
    executor: MultiThreadedExecutor | None = None
    code = 0
    try:
        node = DerainNode()
        node.get_logger().info(transport)
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except DerainNodeError as exc:
        rclpy.logging.get_logger('derain_node').fatal(str(exc))
        code = exc.exit_code
    except rclpy.exceptions.ParameterException as exc:  # YAML/CLI values refused at declare
        rclpy.logging.get_logger('derain_node').fatal(f'invalid parameter: {exc}')
        code = 2
    finally:
        # `ros2 launch` forwards SIGINT and the terminal sends its own: a second one must not
        # interrupt the clean-up half-way (launch escalates to SIGTERM after 5 s anyway).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
