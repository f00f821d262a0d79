"""Launch the RainMamba derain node for one camera.

    ros2 launch rainmamba_ros derain.launch.py image:=/front/image_raw \\
        camera_info:=/front/camera_info namespace:=front

Arguments: namespace, params_file (default share/rainmamba_ros/config/derain.yaml), image,
camera_info, use_sim_time, model_path, device, transport_profile. model_path and device override
the params file when given; left empty, the file's values stay. transport_profile '' lets the node
use the shipped Fast DDS profile for large images (config/fastdds_large_images.xml).
"""
from __future__ import annotations

import sys
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ('namespace', '', 'Namespace of the node and of its relative topics.'),
    ('params_file', None, 'Node parameters (YAML in /**: ros__parameters: form).'),
    ('image', 'image', "Input image topic (remaps the node's `image`)."),
    ('camera_info', 'camera_info', "Input camera_info topic (remaps the node's `camera_info`)."),
    ('use_sim_time', 'false', 'Use /clock; set true with `ros2 bag play --clock`.'),
    ('model_path', '', "Model file (.pt/.onnx); '' keeps the params file's value."),
    ('device', '', "auto | cpu | cuda | cuda:N; '' keeps the params file's value."),
    ('transport_profile', '', "Fast DDS XML profile for the node's participant; '' = the "
     'shipped config/fastdds_large_images.xml (export the same file for the camera driver).'),
)


def _node(context: LaunchContext) -> list[Node]:
    """Build the Node once the arguments are known, so empty overrides can be left out.

    Raises:
        RuntimeError: params_file names no file (the node would otherwise run on defaults
            with only a warning from launch).
    """
    params_file = LaunchConfiguration('params_file').perform(context)
    if not Path(params_file).is_file():
        raise RuntimeError(f'params_file:={params_file} is not a file: give a YAML file of '
                           'derain_node parameters (an absolute path, or leave params_file out '
                           'for the installed config/derain.yaml)')
    overrides: dict[str, object] = {
        'use_sim_time': LaunchConfiguration('use_sim_time').perform(context).lower() == 'true'}
    for name in ('model_path', 'device'):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    env = {'PYTHONUNBUFFERED': '1'}   # log lines in order without a terminal
    profile = LaunchConfiguration('transport_profile').perform(context)
    if profile:
        if not Path(profile).is_file():
            raise RuntimeError(f'transport_profile:={profile} is not a file: give a Fast DDS XML '
                               "profile, or leave it out for the package's own")
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = profile
    return [Node(
        package='rainmamba_ros',
        executable='derain_node',
        name='derain_node',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        # A pseudo-terminal only when launch itself prints to one: redirected to a file, the log
        # would otherwise carry colour escape codes.
        emulate_tty=sys.stdout.isatty(),
        additional_env=env,
        parameters=[params_file, overrides],
        remappings=[('image', LaunchConfiguration('image')),
                    ('camera_info', LaunchConfiguration('camera_info'))],
    )]


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare('rainmamba_ros'), 'config',
                                           'derain.yaml'])
    args = [DeclareLaunchArgument(name, default_value=default_params if default is None
                                  else default, description=description)
            for name, default, description in ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
