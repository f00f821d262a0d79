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

Transport: `derain_node.main` gives the node's Fast DDS participant the shipped profile for large images
(config/fastdds_large_images.xml) unless one is set, so its output reaches other processes; input
images lost on the way are detected through their camera_info (`images_missing`, a WARN).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import JumpHandle, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool, Trigger

from rainmamba_core.errors import RainMambaError
from rainmamba_core.streaming.derainer import settings_said
from rainmamba_core.streaming.timeline import StampTimeline
from rainmamba_ros.cameras import Camera, Received, camera_info_for, camera_report, derain_batch
from rainmamba_ros.conversions import (
    ImageConversionError,
    check_image,
    compressed_source_encoding,
    compressed_to_rgb,
    conversion_backend,
    extract_alpha,
    image_to_rgb,
)
from rainmamba_ros.latest import LatestFrames
from rainmamba_ros.node_logging import RosLogHandler, quiet_opencv
from rainmamba_ros.node_messages import (
    derained_topics,
    diagnostic_status,
    image_message,
    join_topic,
    parameter_descriptor,
    qos_profile,
    stamp_ns,
)
from rainmamba_ros.params import (
    DERAINER_KEYS,
    PARAMS,
    SPECS,
    ParameterError,
    derainer_kwargs,
    validate_all,
    validate_one,
)
from rainmamba_ros.stats import CameraStats
from rainmamba_ros.transport import PROFILE_HINT, shipped_transport_profile

__all__ = ['DerainNode', 'DerainNodeError']


class DerainNodeError(RainMambaError, RuntimeError):
    """The node cannot start (or reload): bad parameters or a model that does not load.

    Attributes:
        exit_code: 2 for parameter problems, 1 for a model that does not build.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
        self._log_handler = RosLogHandler(self)
        for name in ('rainmamba_core', 'rainmamba_ros'):
            logging.getLogger(name).addHandler(self._log_handler)
            logging.getLogger(name).setLevel(logging.INFO)
        quiet_opencv()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
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
        self._slots: LatestFrames[tuple[Camera, Any, float]] = LatestFrames()
        self._cameras: list[Camera] = []
        self._compressed = self._cfg['input_transport'] == 'compressed'
        profile = shipped_transport_profile() or PROFILE_HINT
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
            f'{self._cfg["mode"]}{settings_said(self._derainer)}; image conversions via {conversion_backend()}')
        self._say_size_bound()

    def _say_size_bound(self) -> None:
        bound = getattr(self._derainer, 'size_bound', None)
        if bound is not None:
            self.get_logger().info(f'size bound: {bound}; frames under {self._derainer.min_size}x'
                                   f'{self._derainer.min_size} are rejected (rejected.size)')

    # ------------------------------------------------------------------ seams (benchmarks, embedding)
    @property
    def cameras(self) -> tuple[Camera, ...]:
        """The configured cameras, in `cameras` order."""
        return tuple(self._cameras)

    def stop_worker(self) -> None:
        """Stop the worker thread: received frames then stay in the mailbox for `take_received`."""
        self._stop.set()
        self._slots.close()
        if self._worker.is_alive():
            self._worker.join(timeout=3.0)

    def take_received(self, timeout: float | None = 0.0) -> dict[str, Received]:
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

    def _setup_cameras(self) -> None:
        qos_in = qos_profile(self._cfg['input_reliability'], self._cfg['input_depth'])
        qos_out = qos_profile(self._cfg['output_reliability'], self._cfg['output_depth'])
        for name in self._cfg['cameras']:
            topic = join_topic(name, 'image/compressed' if self._compressed else 'image')
            cam = Camera(name=name, stream_id=self.resolve_topic_name(topic),
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
            self.create_subscription(CameraInfo, join_topic(name, 'camera_info'),
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
        self.get_logger().info(f'model reloaded: {new.backend_name} on {new.device}'
                               f'{settings_said(new)}; stream states restart')
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
    def _reject(self, cam: Camera, exc: ImageConversionError, received: bool = True) -> None:
        """received: count the message as received too (False in the worker: the callback has)."""
        cam.stats.on_reject(exc.kind, str(exc), received=received)
        self.get_logger().error(f'{cam.stream_id}: rejected message: {exc}',
                                throttle_duration_sec=self._cfg['error_throttle_s'])

    def _on_info(self, cam: Camera, msg: CameraInfo) -> None:
        cam.infos.append(msg)
        cam.loss.on_info(stamp_ns(msg.header))

    def on_image(self, cam: Camera, msg: Any) -> None:
        """Subscription callback: validate geometry only (O(1)) and keep the newest frame."""
        try:
            cam.loss.on_image(stamp_ns(msg.header))   # it arrived, whatever follows
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
        tl.observe(stamp_ns(msg.header))
        item = Received(cam, msg, time.monotonic(), tl.breaks, tl.reason, tl.detail)
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

    def _process(self, pending: list[tuple[Camera, Any, float]]) -> None:
        enabled = self._cfg['enabled']
        frames: list[tuple[Camera, Any, float, Any, str, Any]] = []
        for item in pending:
            cam, msg, t_in, breaks, reason, detail = Received(*item)
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
        with self._derainer_lock:
            t0 = time.perf_counter()
            results = derain_batch(self._derainer, items)
            infer_ms = (time.perf_counter() - t0) * 1e3
        for (cam, msg, t_in, rgb, encoding, alpha), (out, exc) in zip(frames, results):
            if exc is None:
                self.publish(cam, msg, t_in, infer_ms, image_message(msg, out, encoding, alpha))
            else:
                self._inference_failed(cam, msg, t_in, rgb, encoding, alpha, exc)

    def _inference_failed(self, cam: Camera, msg: Any, t_in: float, rgb: Any, encoding: str,
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

    def publish(self, cam: Camera, src: Any, t_in: float, infer_ms: float | None,
                 out: Image, passthrough: bool = False) -> None:
        cam.pub_image.publish(out)
        info = camera_info_for(cam, src.header)
        if info is not None:
            cam.pub_info.publish(info)
        stamp = stamp_ns(src.header)
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
            level, message, values, missing_new = camera_report(
                cam, resets, self._cfg, self._derainer.backend_name, self._derainer.device, self._loss_fix)
            if missing_new:
                self.get_logger().warning(
                    f'{cam.stream_id}: {values["images_missing"]} images never arrived although their '
                    f'camera_info did: {self._loss_fix}', throttle_duration_sec=60.0)
            statuses.append(diagnostic_status(f'{self.get_name()}: {cam.stream_id}', cam.stream_id,
                                              level, message, values))
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
