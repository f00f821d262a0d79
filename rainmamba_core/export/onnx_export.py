"""Export RainMamba to ONNX: the streaming step of a causal model, or a fixed-length clip.

Glossary: B batch, T frames, H x W frame size.

Step graph (causal models)::

    inputs : frame (B, 3, H, W) float in [0, 1] RGB, state.<name> for every state tensor
    outputs: derained (B, 3, H, W), new_state.<name> for every state tensor (same order)

Clip graph (any model, windowed inference)::

    inputs : clip (B, T, 3, H, W) float in [0, 1] RGB
    outputs: derained (B, 3, H, W), the newest frame of the clip

Both are traced with `torch.onnx.export(..., dynamo=False)` (TorchScript tracing: the flat state
dict maps directly onto named inputs; torch 2.13's dynamo exporter needs onnxscript, which the
project does not depend on). Sizes are fixed at export time. While tracing, the model's selective
scans run through `rainmamba_core.export.scan` (no ONNX Loop), Hilbert orders are built from plain
ints, and PixelShuffle on 5-D tensors gets a symbolic made of Reshape/Transpose (the stock one
accepts 4-D only).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rainmamba_core.errors import RainMambaError
from rainmamba_core.export import scan as export_scan_mod
from rainmamba_core.export.sidecar import (
    CLIP_INPUT,
    FRAME_INPUT,
    OUTPUT,
    SIDECAR_FORMAT,
    SIDECAR_VERSION,
    STATE_IN,
    STATE_OUT,
    package_version,
    sha256_file,
    write_sidecar,
)
from rainmamba_core.models.rainmamba import DEFAULT_MODEL, RainMamba, load_default_model

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
_DTYPE_NAMES = {torch.float32: 'float32', torch.float16: 'float16'}


class ExportError(RainMambaError, RuntimeError):
    """The model cannot be exported as asked."""


# ------------------------------------------------------------------------------------------ models

def load_model(model: str | os.PathLike | None) -> tuple[RainMamba, str, str]:
    """Load a model for export.

    Args:
        model: a checkpoint path, or None / '' / 'default' for the bundled default (an
            untrained tiny model, seeded so its hash is stable, when the file is missing).
    Returns:
        (model in eval mode, model hash 'sha256:...', source description).
    """
    if model in (None, '', 'default'):
        net = load_default_model().eval()
        if DEFAULT_MODEL.is_file():
            return net, sha256_file(DEFAULT_MODEL), str(DEFAULT_MODEL)
        return net, weights_hash(net), 'untrained tiny (seed 0)'
    path = Path(model)
    if not path.is_file():
        raise ExportError(f"model '{model}' is not a file; pass a .pt checkpoint or 'default'")
    return RainMamba.from_checkpoint(path).eval(), sha256_file(path), str(path)


def weights_hash(model: RainMamba) -> str:
    """'sha256:...' of the config and every state_dict tensor (for models without a file)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return 'sha256:' + digest.hexdigest()


# ------------------------------------------------------------------------------------------ graphs

class StepGraph(nn.Module):
    """forward(frame, *states) -> (derained, *new_states), states in `names` order."""

    def __init__(self, model: RainMamba, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, frame: torch.Tensor, *states: torch.Tensor):
        out, new = self.model.step(frame, dict(zip(self.names, states)))
        return (out, *[new[k] for k in self.names])


class ClipGraph(nn.Module):
    """forward(clip (B, T, 3, H, W)) -> newest derained frame (B, 3, H, W)."""

    def __init__(self, model: RainMamba):
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model(clip)[:, -1]


def _pixel_shuffle_symbolic(g, x, upscale):
    """aten::pixel_shuffle for any rank >= 4: Reshape -> Transpose -> Reshape.

    Static sizes are used when the tracer knows them; otherwise (seen in the official clip graph)
    the target shapes are computed in the graph from Shape(x).
    """
    from torch.onnx import symbolic_helper as sh
    r = sh._get_const(upscale, 'i', 'upscale_factor')
    rank = sh._get_tensor_rank(x)
    if rank is None or rank < 4:
        raise ExportError(f'pixel_shuffle export needs an input of known rank >= 4, got rank {rank}')
    sizes = sh._get_tensor_sizes(x)
    if sizes is not None and all(isinstance(s, int) for s in sizes):
        *lead, channels, height, width = sizes
        n = 1
        for v in lead:
            n *= v
        first = g.op('Constant', value_t=torch.tensor([n, channels // (r * r), r, r, height, width]))
        second = g.op('Constant', value_t=torch.tensor([*lead, channels // (r * r), height * r, width * r]))
    else:
        def const(values):
            return g.op('Constant', value_t=torch.tensor(values, dtype=torch.int64))
        shape = g.op('Shape', x)
        lead = g.op('Slice', shape, const([0]), const([rank - 3]))
        chw = [g.op('Slice', shape, const([i]), const([i + 1])) for i in (rank - 3, rank - 2, rank - 1)]
        out_c = g.op('Div', chw[0], const([r * r]))
        first = g.op('Concat', const([-1]), out_c, const([r, r]), chw[1], chw[2], axis_i=0)
        second = g.op('Concat', lead, out_c, g.op('Mul', chw[1], const([r])), g.op('Mul', chw[2], const([r])),
                      axis_i=0)
    y = g.op('Reshape', x, first)  # (n, C, r, r, H, W)
    y = g.op('Transpose', y, perm_i=[0, 1, 4, 2, 5, 3])  # (n, C, H, r, W, r)
    return g.op('Reshape', y, second)


@functools.lru_cache(maxsize=None)
def _register_symbolics(opset: int) -> None:
    torch.onnx.register_custom_op_symbolic('aten::pixel_shuffle', _pixel_shuffle_symbolic, opset)


@contextlib.contextmanager
def tracing_patches(formulation: str, chunk: int, model: RainMamba | None = None) -> Iterator[None]:
    """Everything that must hold while the model is traced for export (see the module docstring)."""
    with export_scan_mod.export_scan(formulation, chunk, model=model), warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', message='.*Converting a tensor to a Python.*')
        # torch's ONNX shape inference warns once per node about inputs it cannot type; noise here.
        warnings.filterwarnings('ignore', category=UserWarning, module=r'torch\.onnx')
        yield


def _value_info(values) -> list[dict[str, Any]]:
    import onnx
    out = []
    for v in values:
        t = v.type.tensor_type
        out.append({'name': v.name, 'dtype': onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                    'shape': [d.dim_value if d.HasField('dim_value') else d.dim_param for d in t.shape.dim]})
    return out


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            opset: int, formulation: str, chunk: int) -> Any:
    """Trace to a temporary file, check it, then move it into place. Returns the onnx model."""
    import onnx
    if opset < 17:
        raise ExportError(f'opset {opset} is too old: LayerNormalization needs opset >= 17')
    _register_symbolics(opset)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp.onnx')
    os.close(fd)
    try:
        with tracing_patches(formulation, chunk, getattr(module, 'model', None)), torch.no_grad():
            torch.onnx.export(module, args, tmp, dynamo=False, opset_version=opset, do_constant_folding=True,
                              input_names=input_names, output_names=output_names)
        onnx.checker.check_model(tmp)
        proto = onnx.load(tmp, load_external_data=False)
        custom = sorted({f'{n.domain}::{n.op_type}' for n in proto.graph.node if n.domain not in ('', 'ai.onnx')})
        if custom:
            raise ExportError(f'the exported graph uses non-standard operators {custom}; only ai.onnx ops are allowed')
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return proto


def _sidecar(kind: str, proto, model: RainMamba, model_hash: str, source: str, height: int, width: int,
             batch: int, frames: int, precision: str, opset: int, formulation: str, chunk: int,
             state: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    import onnx
    return {
        'format': SIDECAR_FORMAT, 'format_version': SIDECAR_VERSION, 'kind': kind,
        'height': height, 'width': width, 'batch': batch, 'frames': frames, 'precision': precision,
        'opset': opset,
        'frame': ('inputs frame/clip and output derained are RGB float in [0, 1], channels first '
                  '(B, 3, H, W) / (B, T, 3, H, W); derained is the newest frame'),
        'inputs': _value_info(proto.graph.input), 'outputs': _value_info(proto.graph.output),
        'state': state,
        'config': model.config.to_dict(), 'model_hash': model_hash, 'source': source,
        'package_version': package_version(),
        'scan': {'formulation': formulation, 'chunk': chunk},
        'exporter': {'torch': torch.__version__, 'onnx': onnx.__version__, 'seconds': round(seconds, 1)},
    }


def _prepare(model: RainMamba, fp16: bool) -> tuple[RainMamba, torch.dtype, str]:
    dtype = torch.float16 if fp16 else torch.float32
    # Export works on a copy so the caller's model keeps its device and dtype.
    net = copy.deepcopy(model).to('cpu', dtype).eval()
    return net, dtype, 'fp16' if fp16 else 'fp32'


def export_step(model: RainMamba, output: str | os.PathLike, height: int, width: int, batch: int = 1,
                fp16: bool = False, model_hash: str | None = None, source: str = '',
                opset: int = DEFAULT_OPSET, formulation: str = export_scan_mod.DEFAULT_FORMULATION,
                chunk: int = export_scan_mod.DEFAULT_CHUNK) -> dict[str, Any]:
    """Export `model.step` for (batch, 3, height, width) frames; writes OUTPUT and OUTPUT.json.

    Returns:
        the sidecar dict.
    """
    if not model.config.causal:
        raise ExportError('only causal models can be exported as a streaming step; this is an official '
                          '(non-causal) model: export it with --clip --frames T for windowed inference')
    _check_size(height, width, batch)
    net, dtype, precision = _prepare(model, fp16)
    state = net.init_state(batch, height, width, device='cpu', dtype=dtype)
    names = list(state)
    frame = torch.rand(batch, 3, height, width, dtype=dtype)
    inputs = [FRAME_INPUT] + [STATE_IN + k for k in names]
    outputs = [OUTPUT] + [STATE_OUT + k for k in names]
    start = time.perf_counter()
    proto = _export(StepGraph(net, names), (frame, *state.values()), Path(output), inputs, outputs, opset,
                    formulation, chunk)
    layout = [{'name': k, 'input': STATE_IN + k, 'output': STATE_OUT + k, 'shape': list(v.shape),
               'dtype': _DTYPE_NAMES[v.dtype]} for k, v in state.items()]
    data = _sidecar('step', proto, net, model_hash or weights_hash(model), source, height, width, batch, 1,
                    precision, opset, formulation, chunk, layout, time.perf_counter() - start)
    write_sidecar(output, data)
    return data


def export_clip(model: RainMamba, output: str | os.PathLike, height: int, width: int, frames: int | None = None,
                batch: int = 1, fp16: bool = False, model_hash: str | None = None, source: str = '',
                opset: int = DEFAULT_OPSET, formulation: str = export_scan_mod.DEFAULT_FORMULATION,
                chunk: int = export_scan_mod.DEFAULT_CHUNK) -> dict[str, Any]:
    """Export the whole-clip model for (batch, frames, 3, height, width) clips (windowed inference).

    Returns:
        the sidecar dict.
    """
    frames = int(frames or model.config.window)
    if frames < 1:
        raise ExportError(f'--frames must be >= 1, got {frames}')
    _check_size(height, width, batch)
    net, dtype, precision = _prepare(model, fp16)
    clip = torch.rand(batch, frames, 3, height, width, dtype=dtype)
    start = time.perf_counter()
    proto = _export(ClipGraph(net), (clip,), Path(output), [CLIP_INPUT], [OUTPUT], opset, formulation, chunk)
    data = _sidecar('clip', proto, net, model_hash or weights_hash(model), source, height, width, batch, frames,
                    precision, opset, formulation, chunk, [], time.perf_counter() - start)
    write_sidecar(output, data)
    return data


def _check_size(height: int, width: int, batch: int) -> None:
    if height < 8 or width < 8 or batch < 1:
        raise ExportError(f'cannot export for {width}x{height} frames, batch {batch}: frames must be at least '
                          '8x8 and the batch >= 1')
