"""The `rainmamba` command: the core's verbs plus the ROS side's, in one place.

`rainmamba_ros` is the only package that combines both halves: `replay` is its own verb, and
`bench` and `demo` are the core verbs run with their ROS sections appended (replay and node
benchmarks; bag, replay and live-node demo stages).
"""
from __future__ import annotations

import sys

from rainmamba_core import cli as core_cli

# verb -> (module, one-line help), in the order `rainmamba --help` lists them.
VERBS: dict[str, tuple[str, str]] = {}
for _verb, (_module, _help) in core_cli.VERBS.items():
    if _verb == 'demo':
        _module = 'rainmamba_ros.demo'
    elif _verb == 'bench':
        _module, _help = 'rainmamba_ros.bench', _help + ', bag replay and the ROS node'
    VERBS[_verb] = (_module, _help)
    if _verb == 'bench':
        VERBS['replay'] = ('rainmamba_ros.replay', 'derain image topics of a ROS bag into a new bag')


def main(argv: list[str] | None = None) -> int:
    """Console script `rainmamba`."""
    return core_cli.main(argv, VERBS)


if __name__ == '__main__':
    sys.exit(main())
