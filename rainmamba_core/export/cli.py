"""`rainmamba export`: write a model's streaming step (or windowed clip) as ONNX + JSON sidecar."""
from __future__ import annotations

import argparse
import sys

from rainmamba_core.export.scan import DEFAULT_CHUNK, DEFAULT_FORMULATION, SCAN_FORMULATIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', help="a .pt checkpoint, or 'default' for the bundled tiny causal model")
    parser.add_argument('output', help='the .onnx file to write (its sidecar goes to OUTPUT.json)')
    parser.add_argument('--height', type=int, required=True, help='frame height the graph is fixed to')
    parser.add_argument('--width', type=int, required=True, help='frame width the graph is fixed to')
    parser.add_argument('--batch', type=int, default=1, help='streams per run (fixed in the graph; default 1)')
    parser.add_argument('--fp16', action='store_true',
                        help='half-precision weights and activations (SSM state stays fp32); for CUDA/TensorRT')
    parser.add_argument('--clip', action='store_true',
                        help='export the whole-clip model for windowed inference instead of the streaming step')
    parser.add_argument('--frames', type=int, default=0, help='clip length T with --clip (default: the model window)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 17)')
    parser.add_argument('--scan', choices=SCAN_FORMULATIONS, default=DEFAULT_FORMULATION,
                        help='selective-scan formulation in the graph (see docs/onnx.md)')
    parser.add_argument('--chunk', type=int, default=DEFAULT_CHUNK, help='scan chunk length K (0: ~sqrt(L))')


def run(args: argparse.Namespace) -> int:
    from rainmamba_core.export.onnx_export import ExportError, export_clip, export_step, load_model
    from rainmamba_core.export.sidecar import sidecar_path
    try:
        model, digest, source = load_model(args.model)
        common = dict(batch=args.batch, fp16=args.fp16, model_hash=digest, source=source, opset=args.opset,
                      formulation=args.scan, chunk=args.chunk)
        if args.clip:
            meta = export_clip(model, args.output, args.height, args.width, args.frames or None, **common)
        else:
            meta = export_step(model, args.output, args.height, args.width, **common)
    except ExportError as exc:
        print(f'rainmamba export: {exc}', file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({meta['kind']}, {args.width}x{args.height}, batch {meta['batch']}, "
          f"{meta['precision']}, {len(meta['state'])} state tensors, opset {meta['opset']}, "
          f"{meta['exporter']['seconds']} s) and {sidecar_path(args.output)}")
    return 0
