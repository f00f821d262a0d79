"""`rainmamba export` / `rainmamba info` argument handling and refusals (no full export here;
test_onnx_backend.py covers exported graphs)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

pytest.importorskip('onnx')

from rainmamba_core import info_cli  # noqa: E402
from rainmamba_core.export import cli as export_cli  # noqa: E402
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig  # noqa: E402


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_export_refuses_stepping_a_non_causal_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / 'official_like.pt'
    RainMamba(RainMambaConfig.tiny(causal=False)).save_checkpoint(ckpt)
    args = _parse(export_cli, [str(ckpt), str(tmp_path / 'x.onnx'), '--height', '32', '--width', '32'])
    assert export_cli.run(args) == 2
    assert '--clip --frames' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()


def test_export_refuses_missing_model_and_tiny_frames(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = _parse(export_cli, [str(tmp_path / 'nope.pt'), str(tmp_path / 'x.onnx'), '--height', '32', '--width', '32'])
    assert export_cli.run(args) == 2
    assert 'is not a file' in capsys.readouterr().err
    args = _parse(export_cli, ['default', str(tmp_path / 'x.onnx'), '--height', '4', '--width', '32'])
    assert export_cli.run(args) == 2
    assert 'at least 8x8' in capsys.readouterr().err


def test_info_describes_checkpoint_state_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / 'tiny.pt'
    model = RainMamba(RainMambaConfig.tiny())
    model.save_checkpoint(ckpt)
    assert info_cli.run(_parse(info_cli, [str(ckpt), '--height', '40', '--width', '56', '--json'])) == 0
    import json
    info = json.loads(capsys.readouterr().out)
    expected = model.init_state(1, 40, 56)
    assert [s['name'] for s in info['state']] == list(expected)
    assert [s['shape'] for s in info['state']] == [list(v.shape) for v in expected.values()]
    assert info['model_hash'].startswith('sha256:') and info['causal'] is True


def test_info_names_what_the_detail_head_reads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / 'aligned.pt'
    RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True,
                                   detail_context=2)).save_checkpoint(ckpt)
    assert info_cli.run(_parse(info_cli, [str(ckpt), '--height', '40', '--width', '56'])) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith('config'))
    assert 'detail_channels=8 detail_previous=True detail_align=True detail_context=2' in line, line
    RainMamba(RainMambaConfig.tiny()).save_checkpoint(ckpt)
    assert info_cli.run(_parse(info_cli, [str(ckpt), '--height', '40', '--width', '56'])) == 0
    assert 'detail' not in next(x for x in capsys.readouterr().out.splitlines() if x.startswith('config'))


def test_info_refuses_onnx_without_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / 'm.onnx').write_bytes(b'')
    assert info_cli.run(_parse(info_cli, [str(tmp_path / 'm.onnx')])) == 2
    assert 'no sidecar' in capsys.readouterr().err
