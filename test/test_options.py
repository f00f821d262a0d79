"""One table of Derainer options (rainmamba_core.options) behind the node's parameters, replay's
flags and `rainmamba derain`'s flags; one device resolver."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rainmamba_core import derain_cli
from rainmamba_core.options import DERAINER_OPTIONS, OPTIONS, OptionError, check_options, options_from_args
from rainmamba_ros.replay import cli as replay_cli


def _flags(add_arguments) -> dict[str, argparse.Action]:
    """dest -> action of every option a front end's add_arguments declares."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {a.dest: a for a in parser._actions}


@pytest.mark.parametrize('front_end', [replay_cli.add_arguments, derain_cli.add_arguments],
                         ids=['replay', 'derain'])
def test_cli_flags_are_the_table(front_end) -> None:
    flags = _flags(front_end)
    for opt in DERAINER_OPTIONS:
        action = flags.get(opt.name)
        assert action is not None, f'{opt.name} has no flag'
        assert opt.cli_flag in action.option_strings, opt.name
        if opt.name == 'mode' and front_end is derain_cli.add_arguments:
            # derain adds the authors' tiled procedure and picks a mode by the model when unset
            assert set(opt.choices) < set(action.choices) and action.default is None
            continue
        assert action.default == opt.default, opt.name
        assert opt.help in action.help, opt.name
        assert (tuple(action.choices) if action.choices else None) == opt.choices, opt.name


def test_the_old_flags_still_parse() -> None:
    # The flags replay and derain had before the table keep their spelling and meaning.
    parser = argparse.ArgumentParser()
    replay_cli.add_arguments(parser)
    args = parser.parse_args(['in', 'out', '--model', 'm.pt', '--device', 'cpu', '--mode', 'windowed',
                              '--max-size', '320', '--gap-reset-s', '2'])
    assert (args.model_path, args.device, args.mode, args.max_size, args.gap_reset_s) == (
        'm.pt', 'cpu', 'windowed', 320, 2.0)
    kw = replay_cli._derainer_kwargs(args)
    assert kw == {'model_path': 'm.pt', 'mode': 'windowed', 'window': None, 'backend': 'torch',
                  'device': 'cpu', 'precision': 'fp32', 'max_size': 320, 'max_pixels': 0,
                  'flip_ensemble': False, 'novelty_clamp': None, 'detail_align_tiles': None, 'gap_reset_s': 2.0}
    # A switch: the flag alone turns it on, and it reaches the Derainer as a bool.
    args = parser.parse_args(['in', 'out', '--flip-ensemble'])
    assert replay_cli._derainer_kwargs(args)['flip_ensemble'] is True
    # The novelty clamp: -1 (the default) is the model file's own (None to the Derainer), 0 is off.
    args = parser.parse_args(['in', 'out', '--novelty-clamp', '0'])
    assert replay_cli._derainer_kwargs(args)['novelty_clamp'] == 0.0
    # The tiles alike: -1 (the default) is the model file's own, 0 one shift for the frame.
    args = parser.parse_args(['in', 'out', '--detail-align-tiles', '0'])
    assert replay_cli._derainer_kwargs(args)['detail_align_tiles'] == 0
    args = parser.parse_args(['in', 'out', '--detail-align-tiles', '3'])
    assert replay_cli._derainer_kwargs(args)['detail_align_tiles'] == 3


@pytest.mark.parametrize('argv, said', [
    (['--window', '0'], 'window=0 is outside [1, 64]'),
    (['--device', 'gpu'], "device='gpu' is not auto, cpu, cuda or cuda:N"),
    (['--model', 'weights.bin'], "model_path='weights.bin' should be a .pt/.pth checkpoint"),
    (['--max-pixels', 'many'], "expected int, got 'many'"),
    (['--novelty-clamp', '-0.5'], 'novelty_clamp=-0.5 is between -1 and 0'),
    (['--detail-align-tiles', '1'], 'detail_align_tiles=1 is one tile'),
])
def test_flags_are_checked_by_the_table(argv, said, capsys) -> None:
    parser = argparse.ArgumentParser()
    derain_cli.add_arguments(parser)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(['in', 'out', *argv])
    assert exc.value.code == 2
    assert said in capsys.readouterr().err


def test_combinations_are_checked_once_for_every_front_end() -> None:
    parser = argparse.ArgumentParser()
    replay_cli.add_arguments(parser)
    args = parser.parse_args(['in', 'out', '--precision', 'fp16', '--device', 'cpu'])
    with pytest.raises(OptionError, match="precision='fp16' needs a CUDA device"):
        options_from_args(args)
    with pytest.raises(OptionError, match="mode='windowed' needs window >= 2"):
        check_options({'mode': 'windowed', 'window': 1})
    check_options({'mode': 'windowed', 'window': None})  # unset: the model's own window


def test_node_parameters_are_the_table() -> None:
    pytest.importorskip('rclpy', reason='needs rclpy (ROS 2 PyPI wheels or a ROS install)')
    import rclpy

    from rainmamba_core.streaming.derainer import Derainer
    from rainmamba_ros.derain_node import DerainNode

    class Identity:
        name, device, streaming, window = 'identity', 'cpu', True, 2

        def new_state(self, height: int, width: int) -> int:
            return 0

        def step(self, frames, states):
            return frames, states, [True] * len(states)

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = DerainNode(context=ctx, derainer=Derainer(backend=Identity()))
    try:
        for opt in DERAINER_OPTIONS:
            assert node.get_parameter(opt.name).value == opt.ros_default, opt.name
            desc = node.describe_parameter(opt.name)
            assert desc.description.startswith(opt.help), opt.name
            if opt.range:
                got = desc.integer_range[0] if opt.type is int else desc.floating_point_range[0]
                assert (got.from_value, got.to_value) == opt.range, opt.name
            if opt.choices:
                assert desc.additional_constraints == f"one of: {', '.join(opt.choices)}", opt.name
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_the_node_differs_only_where_the_table_says() -> None:
    # A robot: a fixed window and the device's pixel budget; everything else as offline.
    differ = {o.name for o in DERAINER_OPTIONS if o.ros_default != o.default}
    assert differ == {'window', 'max_pixels'}
    assert OPTIONS['max_pixels'].ros_default == -1 and OPTIONS['window'].ros_default == 5


def test_derain_presets_are_the_offline_presets() -> None:
    from rainmamba_core.streaming.offline import PRESETS
    assert set(derain_cli.PRESET_NAMES) == set(PRESETS)


def test_tiled_derain_honours_the_device(tmp_path: Path, capsys) -> None:
    # It used to run on the CPU whatever --device said: now the one resolver refuses a CUDA
    # device on a machine without CUDA (and would use cuda:1 on one with it).
    import torch

    from rainmamba_core.cli import main
    from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
    if torch.cuda.is_available():
        pytest.skip('the refusal needs a machine without CUDA')
    ckpt = tmp_path / 'official.pt'
    RainMamba(RainMambaConfig.tiny(causal=False)).save_checkpoint(ckpt)
    code = main(['derain', 'builtin', str(tmp_path / 'out'), '--model', str(ckpt), '--mode', 'tiled',
                 '--device', 'cuda:1', '--max-frames', '2'])
    assert code == 2
    assert "device 'cuda:1' requested but CUDA is not available" in capsys.readouterr().err
