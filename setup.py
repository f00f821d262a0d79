"""Build script for the rainmamba_ros ament_python package (also plain `pip install .`)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'rainmamba_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={'rainmamba_core': ['py.typed', 'weights/*.pt', 'weights/*.md', 'train/configs/*.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    python_requires='>=3.10',
    install_requires=[
        'numpy',
        'numba',  # fused CPU selective scan (rainmamba_core/ops/selective_scan.py)
        'torch>=2.1',
        'einops',
        'opencv-python-headless',
        'pyyaml',
        'tqdm',
        'rosbags>=0.10',
    ],
    extras_require={
        # CUDA fast path for the selective scan (robots with an NVIDIA GPU).
        'gpu': ['mamba-ssm', 'causal-conv1d', 'onnxruntime-gpu'],
        'onnx': ['onnx', 'onnxruntime'],
        'train': ['tensorboard', 'matplotlib'],
        # ROS 2 Kilted from PyPI, for machines without a ROS install.
        'ros-wheels': ['ros-rclpy', 'ros-sensor-msgs', 'ros-std-msgs', 'ros-std-srvs',
                       'ros-diagnostic-msgs', 'ros-rmw-fastrtps-cpp'],
        # ruff is pinned: a new release may add findings, and the suite fails on any (test/test_lint.py).
        'test': ['pytest', 'pytest-timeout', 'mambapy', 'onnx', 'onnxruntime', 'ruff==0.17.5'],
    },
    zip_safe=True,
    maintainer='rainmamba_ros maintainers',
    maintainer_email='maintainers@rainmamba-ros.dev',
    description='Real-time RainMamba video deraining for ROS 2 camera streams.',
    license='MIT',
    entry_points={
        'console_scripts': [
            'rainmamba = rainmamba_ros.cli:main',
            'derain_node = rainmamba_ros.derain_node:main',
            'replay = rainmamba_ros.replay.cli:main',
        ],
    },
)
