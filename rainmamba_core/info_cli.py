"""`rainmamba info`: describe a checkpoint (.pt) or an exported model (.onnx + sidecar).

An .onnx is described from its sidecar and the onnxruntime session alone (no torch import).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', help="a .pt checkpoint, an exported .onnx, or 'default'")
    parser.add_argument('--height', type=int, default=240, help='frame height for the state layout of a checkpoint')
    parser.add_argument('--width', type=int, default=320, help='frame width for the state layout of a checkpoint')
    parser.add_argument('--json', action='store_true', help='print JSON instead of text')


def describe_onnx(path: Path) -> dict[str, Any]:
    from rainmamba_core.export.sidecar import read_sidecar
    meta = read_sidecar(path)
    info = {'file': str(path), 'type': 'onnx', 'kind': meta['kind'], 'size': f"{meta['width']}x{meta['height']}",
            'batch': meta['batch'], 'frames': meta['frames'], 'precision': meta['precision'], 'opset': meta['opset'],
            'model_hash': meta.get('model_hash'), 'source': meta.get('source'),
            'package_version': meta.get('package_version'), 'scan': meta.get('scan'), 'config': meta['config'],
            'inputs': meta['inputs'], 'outputs': meta['outputs'], 'state': meta['state'],
            'state_bytes': sum(_nbytes(s['shape'], s['dtype']) for s in meta['state'])}
    try:
        import onnxruntime as ort
        info['providers_available'] = ort.get_available_providers()
    except ImportError:
        info['providers_available'] = []
    return info


def describe_checkpoint(model: str, height: int, width: int) -> dict[str, Any]:
    from rainmamba_core.export.onnx_export import load_model
    from rainmamba_core.models.rainmamba import count_parameters
    net, digest, source = load_model(model)
    info = {'file': source, 'type': 'checkpoint', 'model_hash': digest, 'config': net.config.to_dict(),
            'parameters': count_parameters(net), 'causal': net.config.causal}
    if net.config.causal:
        state = net.init_state(1, height, width, device='meta')
        info['state'] = [{'name': k, 'shape': list(v.shape), 'dtype': str(v.dtype).replace('torch.', '')}
                         for k, v in state.items()]
        info['state_bytes'] = sum(_nbytes(s['shape'], s['dtype']) for s in info['state'])
        info['size'] = f'{width}x{height}'
    return info


def _nbytes(shape: list[int], dtype: str) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * (2 if dtype == 'float16' else 4)


def run(args: argparse.Namespace) -> int:
    path = Path(args.model)
    try:
        info = (describe_onnx(path) if path.suffix == '.onnx'
                else describe_checkpoint(args.model, args.height, args.width))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f'rainmamba info: {exc}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key in ('state', 'inputs', 'outputs', 'config'):
            continue
        print(f'{key:18s} {value}')
    cfg = info['config']
    print(f"{'config':18s} causal={cfg['causal']} num_features={cfg['num_features']} "
          f"blocks=({cfg['blocks_high1']},{cfg['blocks_low']},{cfg['blocks_high2']}) d_state={cfg['d_state']}"
          + ''.join(f' {k}={cfg[k]}' for k in ('detail_channels', 'detail_previous', 'detail_align',
                                                'detail_align_thin', 'detail_align_tiles', 'detail_context')
                    if cfg.get(k))
          + (f" detail_align_frames={cfg['detail_align_frames']}" if cfg.get('detail_align_frames', 1) > 1 else '')
          + (f" novelty_clamp={cfg['novelty_clamp']} (fade {cfg.get('novelty_clamp_fade', 0.6)}, "
             f"{cfg.get('novelty_clamp_frames', 2)} earlier frames)" if cfg.get('novelty_clamp') else ''))
    if info.get('state'):
        print(f"state ({len(info['state'])} tensors, {info['state_bytes'] / 1024:.1f} KiB per stream):")
        for s in info['state']:
            print(f"  {s['name']:40s} {str(s['shape']):24s} {s['dtype']}")
    return 0
