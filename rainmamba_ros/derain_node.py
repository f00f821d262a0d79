"""The `derain_node` executable: command line, transport profile, executor, exit codes.

The node itself is `rainmamba_ros.node.DerainNode` (topics, threads and parameters are described
there).
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy_impl

from rainmamba_ros.node import DerainNode, DerainNodeError
from rainmamba_ros.transport import apply_transport_profile

__all__ = ['DerainNode', 'DerainNodeError', 'check_params_files', 'main']


def check_params_files(argv: list[str]) -> None:
    """Refuse a `--params-file` that names no file, with the path as the node would open it.

    Raises:
        DerainNodeError: (exit code 2) naming the file and the working directory.
    """
    for flag, value in zip(argv, argv[1:]):
        if flag == '--params-file' and not Path(value).is_file():
            where = '' if Path(value).is_absolute() else f' (relative to {Path.cwd()})'
            raise DerainNodeError(f'--params-file {value}: no such file{where}; give the path '
                                  'of a YAML file of derain_node parameters, e.g. the package\'s '
                                  'config/derain.yaml', exit_code=2)


def main(args: list[str] | None = None) -> int:
    """Console script `derain_node`: spin a DerainNode on a MultiThreadedExecutor."""
    try:
        check_params_files(list(sys.argv if args is None else args))
        transport = apply_transport_profile()   # before rclpy.init creates the participant
        rclpy.init(args=args)
    except DerainNodeError as exc:
        rclpy.logging.get_logger('derain_node').fatal(str(exc))
        return exc.exit_code
    except _rclpy_impl.RCLError as exc:  # rcl refused the command line (an unparsable file)
        rclpy.logging.get_logger('derain_node').fatal(f'invalid command line: {exc}')
        return 2
    node: DerainNode | None = None
    executor: MultiThreadedExecutor | None = None
    code = 0
    try:
        node = DerainNode()
        node.get_logger().info(transport)
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except DerainNodeError as exc:
        rclpy.logging.get_logger('derain_node').fatal(str(exc))
        code = exc.exit_code
    except rclpy.exceptions.ParameterException as exc:  # YAML/CLI values refused at declare
        rclpy.logging.get_logger('derain_node').fatal(f'invalid parameter: {exc}')
        code = 2
    finally:
        # `ros2 launch` forwards SIGINT and the terminal sends its own: a second one must not
        # interrupt the clean-up half-way (launch escalates to SIGTERM after 5 s anyway).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
