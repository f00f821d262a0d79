"""The JSON sidecar (MODEL.onnx.json) that describes an exported RainMamba graph.

Torch-free (json + hashlib only): the ONNX Runtime backend reads it on installs without PyTorch.

Layout (format_version 1)::

    {"format": "rainmamba_ros.onnx", "format_version": 1,
     "kind": "step" | "clip",            # streaming step of a causal model | windowed clip model
     "height": H, "width": W, "batch": B, "frames": T (clip) | 1 (step),
     "precision": "fp32" | "fp16", "opset": 17,
     "inputs":  [{"name", "shape", "dtype"}, ...],   # graph order
     "outputs": [{"name", "shape", "dtype"}, ...],
     "state":   [{"name", "input", "output", "shape", "dtype"}, ...],   # step only, graph order
     "frame": "...",                      # what the image input/output hold
     "config": {...RainMambaConfig...}, "model_hash": "sha256:...", "source": "...",
     "package_version": "...", "scan": {"formulation", "chunk"}, "exporter": {...versions...}}
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rainmamba_core.errors import RainMambaError

SIDECAR_FORMAT = 'rainmamba_ros.onnx'
SIDECAR_VERSION = 1
KINDS = ('step', 'clip')
FRAME_INPUT = 'frame'
CLIP_INPUT = 'clip'
OUTPUT = 'derained'
STATE_IN = 'state.'
STATE_OUT = 'new_state.'


class SidecarError(RainMambaError, ValueError):
    """A sidecar is missing, unreadable or does not describe its graph."""


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """MODEL.onnx -> MODEL.onnx.json."""
    return Path(str(onnx_path) + '.json')


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """'sha256:<hex>' of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(chunk), b''):
            digest.update(block)
    return 'sha256:' + digest.hexdigest()


def package_version() -> str:
    """Installed version of the rainmamba_ros distribution ('unknown' when run from a bare tree)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version('rainmamba_ros')
        except PackageNotFoundError:
            return 'unknown'
    except ImportError:  # pragma: no cover - Python < 3.8
        return 'unknown'


def write_sidecar(onnx_path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write the sidecar next to the graph atomically; returns its path."""
    path = sidecar_path(onnx_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write('\n')
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_sidecar(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the sidecar of an exported graph.

    Raises:
        SidecarError: missing file, bad JSON, another format, or missing fields.
    """
    path = sidecar_path(onnx_path)
    if not path.is_file():
        raise SidecarError(f'{onnx_path} has no sidecar {path}: it describes the state layout and frame size. '
                           "Export the model with 'rainmamba export', which writes both files, and keep them together")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SidecarError(f'cannot read sidecar {path}: {exc}; re-export the model') from exc
    if not isinstance(data, dict) or data.get('format') != SIDECAR_FORMAT:
        found = data.get('format') if isinstance(data, dict) else None
        raise SidecarError(f'{path} is not a {SIDECAR_FORMAT} sidecar (format={found!r})')
    if int(data.get('format_version', 0)) > SIDECAR_VERSION:
        raise SidecarError(f"{path} has format_version {data.get('format_version')}, newer than this package "
                           f'understands ({SIDECAR_VERSION}); upgrade rainmamba_ros or re-export with this version')
    missing = [k for k in ('kind', 'height', 'width', 'batch', 'inputs', 'outputs', 'state', 'config', 'precision')
               if k not in data]
    if missing:
        raise SidecarError(f'{path} lacks the fields {missing}; re-export the model')
    if data['kind'] not in KINDS:
        raise SidecarError(f"{path}: kind {data['kind']!r} is not one of {KINDS}")
    return data


def check_against_graph(data: dict[str, Any], graph_inputs: list[tuple[str, list]],
                        graph_outputs: list[tuple[str, list]]) -> None:
    """Refuse a sidecar whose input/output names or static shapes differ from the graph's.

    Args:
        graph_inputs, graph_outputs: (name, shape) in graph order, as reported by the runtime
            (shapes may hold None or strings for symbolic dims, which match anything).
    """
    for role, declared, actual in (('inputs', data['inputs'], graph_inputs),
                                   ('outputs', data['outputs'], graph_outputs)):
        names = [d['name'] for d in declared]
        if names != [name for name, _ in actual]:
            raise SidecarError(f'sidecar {role} {names[:4]}... do not match the graph {[n for n, _ in actual][:4]}...; '
                               'the .onnx and .onnx.json files come from different exports: re-export both')
        for d, (name, shape) in zip(declared, actual):
            if len(shape) != len(d['shape']) or any(isinstance(a, int) and a != b for a, b in zip(shape, d['shape'])):
                raise SidecarError(f'{role[:-1]} {name}: graph shape {list(shape)} != sidecar shape {d["shape"]}; '
                                   're-export both files')
