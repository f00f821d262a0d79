"""`rainmamba train`: train from a YAML preset or file with ``section.key=value`` overrides.

Examples::

    rainmamba train --config tiny_cpu
    rainmamba train --config vrds data.lq_root=/data/VRDS/lq data.gt_root=/data/VRDS/gt
    rainmamba train --resume runs/vrds_20250101-120000 train.iterations=400000
    torchrun --nproc_per_node 8 -m rainmamba_core.train.cli --config vrds ...
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .checkpoint import CheckpointError, find_resume_checkpoint
from .config import PRESET_DIR, ConfigError, load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    presets = ', '.join(sorted(p.stem for p in PRESET_DIR.glob('*.yaml')))
    parser.add_argument('--config', help=f'preset name ({presets}) or a YAML file; optional with '
                        '--resume (the run folder\'s config.yaml is used)')
    parser.add_argument('overrides', nargs='*', metavar='KEY=VALUE',
                        help='dotted overrides, e.g. train.lr=2e-4 data.crop=128')
    parser.add_argument('--resume', metavar='RUN_DIR|CKPT',
                        help='continue a run from its newest checkpoint (or this checkpoint file)')
    parser.add_argument('--out', metavar='DIR',
                        help='run folder (default: train.out_dir/<name>_<date>-<time>)')
    parser.add_argument('--max-steps', type=int, default=None,
                        help='stop (with a checkpoint) after this many steps in this session, '
                        'e.g. to fit a cluster time slot; resume later with --resume')
    parser.add_argument('--no-progress', action='store_true', help='no tqdm progress bar')
    parser.add_argument('--print-config', action='store_true',
                        help='print the final config as YAML and exit')


def run(args: argparse.Namespace) -> int:
    from .distributed import cleanup
    from .trainer import Trainer, TrainError, config_from_run_dir
    try:
        resume = find_resume_checkpoint(args.resume) if args.resume else None
        if args.config:
            cfg = load_config(args.config, args.overrides)
        elif resume is not None:
            cfg = config_from_run_dir(resume.parent, args.overrides)
        else:
            print('rainmamba train: give --config PRESET|PATH (or --resume RUN_DIR)', file=sys.stderr)
            return 2
        if args.print_config:
            print(cfg.to_yaml(), end='')
            return 0
        trainer = Trainer(cfg, run_dir=Path(args.out) if args.out else None, resume=resume,
                          progress=not args.no_progress)
        try:
            summary = trainer.train(max_steps=args.max_steps)
        finally:
            trainer.close()
        if trainer.dist.is_main:
            print(f'rainmamba train: step {summary["step"]}/{cfg.train.iterations}, '
                  f'run folder {summary["run_dir"]}')
        return 0
    except (ConfigError, CheckpointError, TrainError) as exc:
        print(f'rainmamba train: {exc}', file=sys.stderr)
        return 2
    finally:
        cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry for ``python -m rainmamba_core.train.cli`` (and torchrun ``-m``)."""
    parser = argparse.ArgumentParser(prog='rainmamba train', description='train a RainMamba model')
    add_arguments(parser)
    # Intermixed: overrides may sit before and after options (`--config X a=1 --out Y b=2`).
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
