"""The `rainmamba` command: every verb has --help; unknown verbs are refused; the demo runs."""
from __future__ import annotations

import json

import pytest

from rainmamba_ros.cli import VERBS, main


def test_top_level_help_lists_every_verb(capsys):
    assert main(['--help']) == 0
    out = capsys.readouterr().out
    assert all(verb in out for verb in VERBS)


@pytest.mark.parametrize('verb', sorted(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, '--help'])
    assert exc.value.code == 0
    assert f'rainmamba {verb}' in capsys.readouterr().out


def test_unknown_verb_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(['fly'])
    assert "unknown verb 'fly'" in capsys.readouterr().err


def test_demo_without_ros_writes_its_outputs(tmp_path):
    out = tmp_path / 'demo'
    assert main(['demo', '--no-ros', '--frames', '3', '--size', '64x48', '--out', str(out)]) == 0
    report = json.loads((out / 'metrics.json').read_text())
    assert report['frames'] == 3 and report['size'] == '64x48'
    assert {'psnr_rainy', 'psnr_derained', 'psnr_median5'} <= set(report)
    print({k: report[k] for k in ('psnr_rainy', 'psnr_derained', 'psnr_median5')})
    # The demo exists to show rain removed: the bundled model must beat its rainy input.
    assert report['psnr_derained'] > report['psnr_rainy']
    assert (out / 'side_by_side.png').is_file() and len(list((out / 'frames').glob('*.png'))) == 3
