"""ONNX Runtime inference backend behind the Backend interface (numpy only; no torch import).

Two ways in, both through `make_onnx_backend`:

* an exported graph (MODEL.onnx + MODEL.onnx.json sidecar from `rainmamba export`): runs on an
  onnxruntime-only install; the graph is for one frame size and refuses others;
* a PyTorch checkpoint, or None for the bundled default: the first frame size met is exported
  (this needs torch) into a cache keyed by model hash, size, precision and export format, like
  TensorRT engine caches; every later run with the same model and size loads the cached graph.

Execution providers are tried in a configurable order (default TensorRT, CUDA, CPU; env
RAINMAMBA_ORT_PROVIDERS="CUDAExecutionProvider,CPUExecutionProvider" overrides it); providers this
onnxruntime build lacks are skipped with one log line.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from rainmamba_core.errors import RainMambaError
from rainmamba_core.export.sidecar import (
    CLIP_INPUT,
    FRAME_INPUT,
    OUTPUT,
    SIDECAR_VERSION,
    SidecarError,
    check_against_graph,
    read_sidecar,
    sidecar_path,
)

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')
GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')
PROVIDERS_ENV = 'RAINMAMBA_ORT_PROVIDERS'
CACHE_ENV = 'RAINMAMBA_CACHE'
_NP_DTYPES = {'float32': np.float32, 'float16': np.float16}

State = dict[str, np.ndarray]


class OnnxBackendError(RainMambaError, RuntimeError):
    """The ONNX Runtime backend cannot run as configured or was given the wrong input."""


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise OnnxBackendError(f'onnxruntime is not installed ({exc}); run: pip install onnxruntime '
                               '(CPU) or onnxruntime-gpu (CUDA/TensorRT)') from exc
    return ort


def default_cache_dir() -> Path:
    """$RAINMAMBA_CACHE, else ~/.cache/rainmamba_ros/onnx."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'rainmamba_ros' / 'onnx'


def resolve_providers(device: str = 'auto', providers: list[str] | tuple[str, ...] | None = None,
                      available: list[str] | None = None) -> list[Any]:
    """Execution providers to ask for, in order, keeping only those this build has.

    Args:
        device: 'auto' (the order as given), 'cpu' (CPU only), 'cuda' / 'cuda:N' (GPU providers
            on device N, CPU kept as the fallback for unsupported nodes).
        providers: the preference order; None -> $RAINMAMBA_ORT_PROVIDERS or DEFAULT_PROVIDERS.
        available: onnxruntime.get_available_providers() (queried when None).
    Returns:
        a list for InferenceSession(providers=...): names or (name, options) pairs.
    """
    if providers is None:
        env = os.environ.get(PROVIDERS_ENV, '')
        providers = [p.strip() for p in env.split(',') if p.strip()] or list(DEFAULT_PROVIDERS)
    if available is None:
        available = _import_ort().get_available_providers()
    wanted = list(providers)
    device_id = 0
    if device == 'cpu':
        wanted = ['CPUExecutionProvider']
    elif device.startswith('cuda'):
        device_id = int(device.split(':')[1]) if ':' in device else 0
        wanted = [p for p in wanted if p in GPU_PROVIDERS] + ['CPUExecutionProvider']
    elif device != 'auto':
        raise OnnxBackendError(f"device '{device}' is not one of auto, cpu, cuda, cuda:N")
    skipped = [p for p in wanted if p not in available]
    chosen = [p for p in wanted if p in available]
    if skipped:
        log.info('onnxruntime: skipping unavailable execution providers %s (this build has %s)',
                 ', '.join(skipped), ', '.join(available))
    if device.startswith('cuda') and not any(p in GPU_PROVIDERS for p in chosen):
        raise OnnxBackendError(f"device '{device}' requested but this onnxruntime build has no GPU provider "
                               f"(available: {', '.join(available)}); install onnxruntime-gpu or use device 'cpu'")
    if not chosen:
        raise OnnxBackendError(f"none of the execution providers {wanted} is available (this build has "
                               f"{', '.join(available)}); set {PROVIDERS_ENV} to a subset of those")
    out: list[Any] = []
    for p in chosen:
        if p in GPU_PROVIDERS:
            out.append((p, {'device_id': device_id}))
        else:
            out.append(p)
    return out


def to_float(frames: np.ndarray, dtype: type) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [0, 1]."""
    return (np.moveaxis(frames, -1, -3).astype(np.float32) / np.float32(255.0)).astype(dtype, copy=False)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """(..., 3, H, W) float -> (..., H, W, 3) uint8 (clamped, rounded half to even like torch.round)."""
    # NaN -> 0 only to keep the cast defined; such frames are flagged non-finite and not used.
    x = np.nan_to_num(x.astype(np.float32, copy=False), nan=0.0)
    y = np.rint(np.clip(x, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(y, -3, -1))


class OnnxBackend:
    """One exported graph (step or clip) in an ONNX Runtime session.

    Args:
        path: MODEL.onnx with its MODEL.onnx.json sidecar.
        device, providers: see `resolve_providers`.
        precision: must match the export ('fp16' graphs need a GPU provider).
        threads: intra-op threads for the CPU provider (0: onnxruntime's default).
    """

    name = 'onnxruntime'

    def __init__(self, path: str | os.PathLike, device: str = 'auto', precision: str = 'fp32',
                 providers: list[str] | None = None, threads: int = 0):
        ort = _import_ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxBackendError(f'ONNX model {self.path} does not exist')
        try:
            self.meta = read_sidecar(self.path)
        except SidecarError as exc:
            raise OnnxBackendError(str(exc)) from exc
        if precision not in ('fp32', 'fp16', 'bf16'):
            raise OnnxBackendError(f"precision '{precision}' is not one of fp32, fp16, bf16")
        if precision != self.meta['precision']:
            raise OnnxBackendError(f"{self.path} was exported for {self.meta['precision']} but precision "
                                   f"'{precision}' was asked; re-export "
                                   f"(rainmamba export {'--fp16 ' if precision == 'fp16' else ''}...) "
                                   f"or set precision '{self.meta['precision']}'")
        chosen = resolve_providers(device, providers)
        names = [p[0] if isinstance(p, tuple) else p for p in chosen]
        if precision == 'fp16' and not any(p in GPU_PROVIDERS for p in names):
            raise OnnxBackendError(f'precision fp16 needs a CUDA or TensorRT provider (have {names}); use fp32 on CPU')
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The scan's decays underflow through the denormal range; x86 arithmetic on denormals is
        # slow, and flushing them to zero changes values below 1.2e-38 only.
        options.add_session_config_entry('session.set_denormal_as_zero', '1')
        # Idle intra-op threads sleep instead of spinning: between camera frames a spinning pool
        # burns the cores the rest of the robot (and this node's other stages) need.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        self.session = ort.InferenceSession(str(self.path), options, providers=chosen)
        check_against_graph(self.meta, [(i.name, i.shape) for i in self.session.get_inputs()],
                            [(o.name, o.shape) for o in self.session.get_outputs()])
        self.providers = self.session.get_providers()
        self.device = self.providers[0]
        self.kind = self.meta['kind']
        self.streaming = self.kind == 'step'
        self.window = int(self.meta['frames'] if self.kind == 'clip' else self.meta['config'].get('window', 5))
        self.size = (int(self.meta['height']), int(self.meta['width']))
        self.batch = int(self.meta['batch'])
        self.state_layout = self.meta['state']
        self.dtype = _NP_DTYPES[next(i['dtype'] for i in self.meta['inputs'] if i['name'] in (FRAME_INPUT, CLIP_INPUT))]
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------- checks
    def _check_size(self, height: int, width: int) -> None:
        if (height, width) != self.size:
            raise OnnxBackendError(
                f'{self.path.name} was exported for {self.size[1]}x{self.size[0]} frames, got {width}x{height}. '
                f'Re-export for this size (rainmamba export MODEL OUT.onnx --height {height} --width {width}), '
                "resize the frames, or use backend='onnxruntime' with the .pt checkpoint, which exports each "
                'size it meets into a cache')

    def _need(self, kind: str, what: str) -> None:
        if self.kind != kind:
            hint = ('export with --clip --frames T for windowed mode' if kind == 'clip'
                    else 'export the streaming step of a causal model (without --clip)')
            raise OnnxBackendError(f'{self.path.name} is a {self.kind} graph and cannot {what}; {hint}')

    # -------------------------------------------------------------------------- Backend API
    def new_state(self, height: int, width: int) -> State:
        """Zero state for one stream: {name: (1, ...) array} in the sidecar's layout."""
        self._need('step', 'step frame by frame')
        self._check_size(height, width)
        return {s['name']: np.zeros([1, *s['shape'][1:]], dtype=_NP_DTYPES[s['dtype']]) for s in self.state_layout}

    def step(self, frames: np.ndarray, states: list[State]) -> tuple[np.ndarray, list[State], list[bool]]:
        """frames: (B, H, W, 3) uint8 -> derained (B, H, W, 3) uint8, new states, finite flags."""
        self._need('step', 'step frame by frame')
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(states) != frames.shape[0]:
            raise OnnxBackendError(f'step expects (B, H, W, 3) frames and B states, got {frames.shape} and '
                                   f'{len(states)} states')
        self._check_size(*frames.shape[1:3])
        x = to_float(frames, self.dtype)  # (B, 3, H, W)
        outs, new_states = [], []
        for start in range(0, len(states), self.batch):  # the graph's batch is fixed at export
            group = states[start:start + self.batch]
            xs = x[start:start + self.batch]
            real = len(group)
            if real < self.batch:  # pad a short last group with copies; their results are dropped
                xs = np.concatenate([xs, np.repeat(xs[-1:], self.batch - real, 0)])
                group = group + [group[-1]] * (self.batch - real)
            feeds = {FRAME_INPUT: xs}
            for s in self.state_layout:
                feeds[s['input']] = (np.concatenate([g[s['name']] for g in group]) if self.batch > 1
                                     else group[0][s['name']])
            with self._lock:
                result = self.session.run(None, feeds)
            outs.append(result[0][:real])
            for i in range(real):
                new_states.append({s['name']: r[i:i + 1] for s, r in zip(self.state_layout, result[1:])})
        out = np.concatenate(outs)
        finite = [bool(np.isfinite(o).all() and all(np.isfinite(v).all() for v in st.values()))
                  for o, st in zip(out, new_states)]
        return to_uint8(out), new_states, finite

    def run_clip(self, clips: np.ndarray) -> np.ndarray:
        """clips: (B, T, H, W, 3) uint8 -> newest derained frames (B, H, W, 3) uint8."""
        self._need('clip', 'run windowed clips')
        if clips.ndim != 5 or clips.shape[1] != self.window:
            raise OnnxBackendError(f'{self.path.name} was exported for clips of {self.window} frames, got shape '
                                   f'{clips.shape}; use window={self.window} or re-export with --frames')
        self._check_size(*clips.shape[2:4])
        x = to_float(clips, self.dtype)  # (B, T, 3, H, W)
        outs = []
        for start in range(0, len(x), self.batch):
            xs = x[start:start + self.batch]
            real = len(xs)
            if real < self.batch:
                xs = np.concatenate([xs, np.repeat(xs[-1:], self.batch - real, 0)])
            with self._lock:
                outs.append(self.session.run([OUTPUT], {CLIP_INPUT: xs})[0][:real])
        return to_uint8(np.concatenate(outs))


class CachedExportBackend:
    """A PyTorch checkpoint run through ONNX Runtime: each frame size met is exported once into a
    cache (keyed by model hash, size, batch, precision, export format) and then loaded from it.

    Importing torch happens here only (exporting needs it); the cached graphs themselves run
    without it.
    """

    name = 'onnxruntime'

    def __init__(self, model_path: str | os.PathLike | None, device: str = 'auto', precision: str = 'fp32',
                 providers: list[str] | None = None, cache_dir: str | os.PathLike | None = None, threads: int = 0,
                 run_time: dict[str, Any] | None = None):
        from rainmamba_core.export import onnx_export
        from rainmamba_core.models.config import with_run_time
        self._export = onnx_export
        self.model, self.model_hash, self.source = onnx_export.load_model(model_path)
        config = with_run_time(self.model.config, run_time or {})
        changed = {key: getattr(config, key) for key in run_time or {}
                   if getattr(config, key) != getattr(self.model.config, key)}
        if changed:
            # Another graph than the file's: its cache entries get their own key.
            self.model.config = config
            tagged = self.model_hash + ''.join(f';{key}={value!r}' for key, value in changed.items())
            self.model_hash = 'sha256:' + hashlib.sha256(tagged.encode()).hexdigest()
            self.source += ' with ' + ', '.join(f'{key}={value:g}' for key, value in changed.items())
        self.device_arg, self.precision, self.providers_arg, self.threads = device, precision, providers, threads
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.streaming = bool(self.model.config.causal)
        self.window = int(self.model.config.window)
        self._graphs: dict[tuple, OnnxBackend] = {}
        self._lock = threading.Lock()
        if precision not in ('fp32', 'fp16'):
            raise OnnxBackendError(f"precision '{precision}' is not supported by the onnxruntime backend (fp32, fp16)")
        # Resolve providers now so a bad device fails at construction, not at the first frame.
        self.device = resolve_providers(device, providers)[0]
        self.device = self.device[0] if isinstance(self.device, tuple) else self.device

    def cache_path(self, kind: str, height: int, width: int, frames: int = 1) -> Path:
        digest = self.model_hash.split(':')[-1][:16]
        tag = f'{kind}{frames}' if kind == 'clip' else kind
        return self.cache_dir / f'rainmamba_{digest}_{tag}_{width}x{height}_b1_{self.precision}_v{SIDECAR_VERSION}.onnx'

    def graph(self, kind: str, height: int, width: int, frames: int = 1) -> OnnxBackend:
        """The session for this size, exported into the cache first when missing."""
        key = (kind, height, width, frames)
        with self._lock:
            if key in self._graphs:
                return self._graphs[key]
            path = self.cache_path(kind, height, width, frames)
            if not (path.is_file() and sidecar_path(path).is_file()):
                log.info('exporting %s (%s) for %dx%d frames to %s (first use of this size; later runs load it)',
                         self.source, kind, width, height, path)
                fp16 = self.precision == 'fp16'
                if kind == 'step':
                    self._export.export_step(self.model, path, height, width, fp16=fp16, model_hash=self.model_hash,
                                             source=self.source)
                else:
                    self._export.export_clip(self.model, path, height, width, frames, fp16=fp16,
                                             model_hash=self.model_hash, source=self.source)
            else:
                log.info('loading cached ONNX export %s', path)
            backend = OnnxBackend(path, self.device_arg, self.precision, self.providers_arg, self.threads)
            if backend.meta.get('model_hash') != self.model_hash:
                raise OnnxBackendError(f'cached export {path} belongs to model {backend.meta.get("model_hash")}, '
                                       f'not {self.model_hash}; delete it (cache dir {self.cache_dir})')
            self._graphs[key] = backend
            self.device = backend.device
            return backend

    def new_state(self, height: int, width: int) -> State:
        if not self.streaming:
            raise OnnxBackendError(f'{self.source} is an official (non-causal) model: it cannot step; '
                                   'use windowed mode')
        return self.graph('step', height, width).new_state(height, width)

    def step(self, frames: np.ndarray, states: list[State]) -> tuple[np.ndarray, list[State], list[bool]]:
        return self.graph('step', *frames.shape[1:3]).step(frames, states)

    def run_clip(self, clips: np.ndarray) -> np.ndarray:
        return self.graph('clip', *clips.shape[2:4], frames=clips.shape[1]).run_clip(clips)


def make_onnx_backend(path: str | os.PathLike | None, device: str = 'auto', precision: str = 'fp32',
                      providers: list[str] | None = None, cache_dir: str | os.PathLike | None = None,
                      threads: int = 0, run_time: dict[str, Any] | None = None) -> OnnxBackend | CachedExportBackend:
    """The onnxruntime backend for a model file (what `Derainer(backend='onnxruntime')` calls).

    Args:
        path: an exported .onnx (with its .onnx.json sidecar; torch is never imported), a .pt
            checkpoint, or None for the bundled default (both exported per frame size into the cache).
        device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'.
        precision: 'fp32' | 'fp16' (fp16 needs a GPU provider).
        providers: provider preference order (default $RAINMAMBA_ORT_PROVIDERS or TensorRT, CUDA, CPU).
        cache_dir: where per-size exports go (default $RAINMAMBA_CACHE or ~/.cache/rainmamba_ros/onnx).
        threads: CPU intra-op threads (0: onnxruntime's default).
        run_time: run-time settings (`models.config.RUN_TIME_KEYS`: novelty_clamp, detail_align_tiles)
            replacing the model's own; a checkpoint is exported with the values given, an .onnx file
            (both fixed at export) is refused unless each value is its own.
    """
    if path is not None and Path(path).suffix == '.onnx':
        from rainmamba_core.models.config import LATE_KEYS  # no torch: the config module is plain Python
        backend = OnnxBackend(path, device, precision, providers, threads)
        for key, value in (run_time or {}).items():
            own = backend.meta['config'].get(key, LATE_KEYS[key])
            if float(value) != float(own):
                raise OnnxBackendError(
                    f'{Path(path).name} has {key} fixed at export ({own:g}), {key}={value:g} was asked: export '
                    f'a model file with it (rainmamba blend MODEL.pt MODEL.pt --alpha 0 --set {key}={value:g} '
                    '--out set.pt; rainmamba export set.pt ...), give the .pt checkpoint (exported per frame '
                    f'size into the cache), or set {key} -1 (the file\'s own)')
        return backend
    return CachedExportBackend(path, device, precision, providers, cache_dir, threads, run_time)
