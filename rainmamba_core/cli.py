"""The `rainmamba` command line: one verb per job, each with its own `--help`.

Every verb lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their verb runs, so `rainmamba --help` stays fast and a verb
whose optional dependencies are missing does not break the others.

`VERBS` are the core's own. The installed `rainmamba` command lives on the ROS side (rainmamba_ros), which
runs this `main` with the core verbs plus the ROS side's (replay; bench and demo with their ROS
sections), so the core never names the ROS package.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rainmamba_core.errors import RainMambaError

log = logging.getLogger(__name__)

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    'demo': ('rainmamba_core.demo', 'run the end-to-end demo on a built-in rainy clip (or --input)'),
    'derain': ('rainmamba_core.derain_cli', 'derain a video, frame folder or image list offline'),
    'train': ('rainmamba_core.train.cli', 'train a model from a YAML config (+ overrides)'),
    'blend': ('rainmamba_core.train.blend', 'blend the weights of two models trained from one model'),
    'eval': ('rainmamba_core.eval.cli', 'evaluate a model (PSNR/SSIM, baselines, report)'),
    'synth': ('rainmamba_core.data.cli', 'make a synthetic rainy clip from clean frames'),
    'export': ('rainmamba_core.export.cli', 'export a model to ONNX (streaming step or clip)'),
    'bench': ('rainmamba_core.bench', 'benchmark streaming vs windowed and the scan backends'),
    'info': ('rainmamba_core.info_cli', 'describe a checkpoint or ONNX model'),
}


def build_parser(verbs: dict[str, tuple[str, str]] = VERBS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='rainmamba', description=f'RainMamba video deraining: {", ".join(verbs)}.')
    parser.add_argument('-v', '--verbose', action='count', default=0,
                        help='more log output (-v info, -vv debug)')
    sub = parser.add_subparsers(dest='verb', metavar='VERB')
    for verb, (_, help_text) in verbs.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None, verbs: dict[str, tuple[str, str]] = VERBS) -> int:
    """Run one verb; `verbs` maps each verb to (module, one-line help)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(verbs)
    # Parse only the global options and the verb; the verb's module parses the rest.
    verbosity = 0
    while argv and argv[0] in ('-v', '-vv', '--verbose'):
        verbosity += 2 if argv.pop(0) == '-vv' else 1
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in verbs:
        parser.error(f'unknown verb {verb!r}; choose one of: {", ".join(verbs)}')
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity + 1, 2)],
        format='%(levelname)s %(name)s: %(message)s')
    module_name, help_text = verbs[verb]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f'rainmamba {verb}: cannot load {module_name}: {exc}', file=sys.stderr)
        return 2
    verb_parser = argparse.ArgumentParser(prog=f'rainmamba {verb}', description=help_text)
    module.add_arguments(verb_parser)
    args = verb_parser.parse_intermixed_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f'rainmamba {verb}: interrupted', file=sys.stderr)
        return 130
    except RainMambaError as exc:  # bad input or setup: the message says what to fix
        log.debug('rainmamba %s failed', verb, exc_info=True)
        print(f'rainmamba {verb}: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
