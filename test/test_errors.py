"""User-facing errors: one base class, a clean one-line CLI message, no unsafe-loading advice."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

import rainmamba_core
import rainmamba_ros
from rainmamba_core.errors import RainMambaError, load_error_reason
from rainmamba_core.models.rainmamba import CheckpointError, RainMamba
from rainmamba_ros.cli import main


class _Stranger:
    """An arbitrary Python object: the safe loader must refuse a file that pickles one."""

    def __init__(self) -> None:
        self.payload = 1


@pytest.fixture()
def pickled_object(tmp_path):
    path = tmp_path / 'stranger.pt'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'extra': _Stranger()}, path)
    return path


def _error_classes(package) -> list[type]:
    found = {}
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # rclpy-only modules where rclpy is absent
            continue
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, Exception) and name.endswith('Error')
                    and obj.__module__ == module.__name__):
                found[f'{obj.__module__}.{name}'] = obj
    return list(found.values())


def test_every_package_error_is_a_rainmamba_error():
    classes = _error_classes(rainmamba_core) + _error_classes(rainmamba_ros)
    # the torch-side modules alone define more than a dozen; a broken walk would find none
    assert len(classes) >= 15
    stray = [f'{c.__module__}.{c.__name__}' for c in classes if not issubclass(c, RainMambaError)]
    assert stray == []


def test_refused_pickle_names_the_object_and_never_advises_unsafe_loading(pickled_object):
    with pytest.raises(CheckpointError) as exc:
        RainMamba.from_checkpoint(pickled_object)
    msg = str(exc.value)
    assert 'stranger.pt' in msg and 'safe loader' in msg and '_Stranger' in msg
    assert 'weights_only=False' not in msg and '`weights_only` set to `False`' not in msg


def test_load_error_reason_keeps_other_errors_first_line():
    reason = load_error_reason(RuntimeError('PytorchStreamReader failed reading zip archive\nmore detail'))
    assert reason == 'RuntimeError: PytorchStreamReader failed reading zip archive'


@pytest.mark.parametrize('argv', [
    ['export', '{bad}', '{tmp}/o.onnx', '--height', '64', '--width', '64'],
    ['info', '{bad}'],
    ['eval', '--model', '{bad}', '--data', 'synthetic', '--clips', '1', '--out', '{tmp}/eval'],
    ['demo', '--no-ros', '--model', '{bad}', '--out', '{tmp}/demo'],
])
def test_cli_refuses_a_bad_checkpoint_in_one_line(argv, tmp_path, capsys):
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint at all')
    argv = [a.format(bad=bad, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert f'rainmamba {argv[0]}:' in err and 'cannot read checkpoint' in err and str(bad) in err
    # refused before anything was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.pt']
