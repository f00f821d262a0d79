"""`python -m rainmamba_ros.replay`: the `replay` console script."""
import sys

from rainmamba_ros.replay.cli import main

if __name__ == '__main__':
    sys.exit(main())
