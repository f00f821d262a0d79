"""The core never reaches the ROS side: every rainmamba_core module imports with rclpy, rosbags
and rainmamba_ros absent, and none names rainmamba_ros for a (lazy) import."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / 'rainmamba_core'

# A subprocess where the three cannot be imported (a meta-path finder refuses them), then every
# module of the core is imported by name.
_PROBE = r'''
import importlib, importlib.abc, pkgutil, sys
BLOCKED = ('rclpy', 'rosbags', 'rainmamba_ros')
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{name} is blocked for this test')
        return None
sys.meta_path.insert(0, Block())
import rainmamba_core
names = [m.name for m in pkgutil.walk_packages(rainmamba_core.__path__, 'rainmamba_core.')]
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f'{name}: {type(exc).__name__}: {exc}')
leaked = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
print(len(names)); print('\n'.join(failed)); print('leaked', leaked)
'''


def test_every_core_module_imports_without_the_ros_side() -> None:
    res = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    # the core has about 60 modules: a broken walk that imports none must not pass
    assert int(lines[0]) >= 50, res.stdout
    assert lines[1:] == ['leaked []'], res.stdout


def test_no_core_module_names_the_ros_package() -> None:
    # The distribution's name stays where it is data (checkpoint format, sidecar format, cache
    # folder, installed version): things already written must keep loading.
    ros_modules = sorted({p.stem if p.stem != '__init__' else p.parent.name
                          for p in (ROOT / 'rainmamba_ros').rglob('*.py')} - {'rainmamba_ros'})
    assert len(ros_modules) >= 10  # replay, bench, derain_node, params, ...: a broken glob finds none
    named = re.compile(r'import rainmamba_ros|from rainmamba_ros|rainmamba_ros\.(' + '|'.join(ros_modules) + r')\b')
    offenders = [f'{p.relative_to(CORE.parent)}:{i}' for p in sorted(CORE.rglob('*.py'))
                 for i, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
    assert offenders == []
