"""What the derain node keeps per camera, and the pure steps of its worker."""
from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rainmamba_core.streaming.timeline import StampTimeline
from rainmamba_ros.stats import CameraStats, InputLossMonitor, assess


@dataclass
class Camera:
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


class Received(NamedTuple):
    """One camera frame waiting in the keep-latest mailbox."""

    cam: Camera
    msg: Any
    t_in: float                       # monotonic time of reception
    breaks: int = -1                  # the camera's timeline breaks up to this frame (-1: unknown)
    reason: str = ''                  # reason and detail of the latest of them
    detail: str = ''


def camera_info_for(cam: Camera, header: Any) -> Any:
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


def derain_batch(derainer: Any, items: list[tuple[str, Any, int | None]]) -> list[tuple[Any, Exception | None]]:
    """Derain one frame per stream in one batch: [(output, None) | (None, error)] in item order.

    When the batch fails and holds several streams, they are retried one by one, so one failing
    stream does not take the others' frames with it.
    """
    try:
        return [(o, None) for o in derainer.process_batch(items)]
    except Exception as batch_exc:
        if len(items) == 1:
            return [(None, batch_exc)]
    results: list[tuple[Any, Exception | None]] = []
    for item in items:
        try:
            results.append((derainer.process_batch([item])[0], None))
        except Exception as exc:
            results.append((None, exc))
    return results


def camera_report(cam: Camera, resets: dict[str, int], cfg: dict[str, Any], backend: str, device: str,
                  loss_fix: str) -> tuple[str, str, dict[str, Any], int]:
    """One camera's diagnostics since the previous report: (level, message, values, images newly
    missing). Marks the counters as reported."""
    snap = cam.stats.snapshot()
    errors = int(snap['inference_errors']) - int(cam.reported.get('inference_errors', 0))
    rejected = int(snap['rejected']) - int(cam.reported.get('rejected', 0))
    cam.reported = snap
    missing = cam.loss.missing()
    missing_new, cam.reported_missing = missing - cam.reported_missing, missing
    level, message = assess(snap, cfg['latency_warn_ms'], cfg['rate_warn_ratio'], cfg['enabled'],
                            errors_since_last=errors, rejected_since_last=rejected,
                            missing_since_last=missing_new, loss_fix=loss_fix)
    values = dict(snap)
    values.update(camera_info_received=cam.loss.infos, images_missing=missing)
    values.update({f'resets.{k}': v for k, v in sorted(resets.items())})
    values['resets_total'] = sum(v for k, v in resets.items() if not k.startswith('node.'))
    values.update(enabled=cfg['enabled'], mode=cfg['mode'], backend=backend, device=device,
                  input_topic=cam.stream_id)
    return level, message, values, missing_new
