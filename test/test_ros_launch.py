"""launch/derain.launch.py: checked from its source (CI has no ROS `launch` package; the PyPI
`launch` is an unrelated project), and for real when launch/launch_ros are importable."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch' / 'derain.launch.py'
REQUIRED_ARGS = {'namespace', 'params_file', 'image', 'camera_info', 'use_sim_time',
                 'model_path', 'device', 'transport_profile'}


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _literal(name: str) -> Any:
    for node in _tree().body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f'{name} not found in {LAUNCH.name}')


def _calls(name: str) -> list[ast.Call]:
    return [n for n in ast.walk(_tree()) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def test_declares_the_required_arguments() -> None:
    args = _literal('ARGUMENTS')
    assert {a[0] for a in args} == REQUIRED_ARGS
    assert all(a[2] for a in args)  # every argument has a description
    defaults = {a[0]: a[1] for a in args}
    assert defaults['use_sim_time'] == 'false' and defaults['image'] == 'image'
    assert defaults['params_file'] is None  # resolved to the package share below


def test_params_file_defaults_to_the_installed_config() -> None:
    finds = _calls('FindPackageShare')
    assert [ast.literal_eval(c.args[0]) for c in finds] == ['rainmamba_ros']
    joins = _calls('PathJoinSubstitution')
    parts = [ast.literal_eval(e) for e in joins[0].args[0].elts[1:]]
    assert parts == ['config', 'derain.yaml']
    assert (ROOT / 'config' / 'derain.yaml').is_file()
    # setup.py installs both folders where FindPackageShare looks.
    setup = (ROOT / 'setup.py').read_text()
    assert "glob('config/*.yaml')" in setup and "glob('launch/*.launch.py')" in setup


def test_node_runs_the_console_script_with_remappings() -> None:
    (node,) = _calls('Node')
    kw = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(kw['package']) == 'rainmamba_ros'
    assert ast.literal_eval(kw['executable']) == 'derain_node'
    assert 'derain_node = rainmamba_ros.derain_node:main' in (ROOT / 'setup.py').read_text()
    remaps = [(ast.literal_eval(t.elts[0]), ast.literal_eval(t.elts[1].args[0]))
              for t in kw['remappings'].elts]
    assert remaps == [('image', 'image'), ('camera_info', 'camera_info')]
    assert 'namespace' in kw and 'parameters' in kw


def test_params_file_is_loadable_by_the_node() -> None:
    data = yaml.safe_load((ROOT / 'config' / 'derain.yaml').read_text())
    assert list(data) == ['/**'] and 'ros__parameters' in data['/**']


def _launch_modules() -> None:
    for mod in ('launch', 'launch_ros'):
        spec = importlib.util.find_spec(mod)
        if spec is None:
            pytest.skip(f'ROS `{mod}` is not installed (not on PyPI); the source checks above '
                        'cover the launch file')
    import launch
    if not hasattr(launch, 'LaunchDescription'):
        pytest.skip('the installed `launch` is not the ROS launch package')


def test_generate_launch_description_for_real() -> None:
    _launch_modules()
    from launch import LaunchContext
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location('derain_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    ld = module.generate_launch_description()
    assert {a.name for a in ld.get_launch_arguments()} == REQUIRED_ARGS
    context = LaunchContext()
    context.launch_configurations.update({
        'namespace': 'front', 'params_file': str(ROOT / 'config' / 'derain.yaml'),
        'image': '/front/image_raw', 'camera_info': '/front/camera_info',
        'use_sim_time': 'true', 'model_path': '', 'device': 'cpu'})
    (node,) = module._node(context)
    assert isinstance(node, Node)
    assert node.node_package == 'rainmamba_ros' and node.node_executable == 'derain_node'
