"""The Fast DDS transport profile for large images: where it ships and how the node applies it."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

TRANSPORT_PROFILE = 'fastdds_large_images.xml'
PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
PROFILE_HINT = ('$(ros2 pkg prefix rainmamba_ros)/share/rainmamba_ros/config/'
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
