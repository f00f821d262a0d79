"""`rainmamba synth` and `rainmamba eval` end to end on tiny data (baselines only: fast)."""
from __future__ import annotations

import json
from pathlib import Path

from rainmamba_core.cli import main


def test_synth_then_eval_writes_report(tmp_path: Path) -> None:
    assert main(['synth', '--input', 'builtin', '--out', str(tmp_path / 'syn'), '--frames', '3',
                 '--size', '48', '64', '--preset', 'heavy', '--seed', '1']) == 0
    assert len(list((tmp_path / 'syn' / 'rainy').glob('*.png'))) == 3
    assert len(list((tmp_path / 'syn' / 'clean').glob('*.png'))) == 3
    assert main(['eval', '--model', 'none', '--data', str(tmp_path / 'syn'),
                 '--out', str(tmp_path / 'rep')]) == 0
    data = json.loads((tmp_path / 'rep' / 'report.json').read_text())
    rainy = data['methods']['rainy_input']['summary']
    meta = json.loads((tmp_path / 'syn' / 'rain.json').read_text())
    assert meta['frames'] == 3 and rainy['psnr'] < 40  # heavy rain visibly degrades the frames
    assert 'temporal_median5' in data['methods']
    assert (tmp_path / 'rep' / 'report.md').exists()


def test_synthetic_eval_reports_each_preset(tmp_path: Path, capsys) -> None:
    # built-in scenes (no shared data needed); clip i gets preset i % 2: two of each
    assert main(['eval', '--model', 'none', '--data', 'synthetic', '--clean-roots', '--clips', '4',
                 '--frames', '2', '--size', '48', '64', '--presets', 'moderate', 'storm',
                 '--out', str(tmp_path / 'rep')]) == 0
    data = json.loads((tmp_path / 'rep' / 'report.json').read_text())
    groups = data['by_preset']
    assert list(groups) == ['moderate', 'storm']
    seqs = data['methods']['rainy_input']['sequences']
    for preset, g in groups.items():
        mine = [v['psnr'] for k, v in seqs.items() if f'_{preset}' in k]
        assert g['rainy_input']['clips'] == len(mine) == 2
        assert abs(g['rainy_input']['psnr'] - sum(mine) / 2) < 1e-9  # a plain mean of its clips
    # a storm degrades more than moderate rain
    assert groups['storm']['rainy_input']['psnr'] < groups['moderate']['rainy_input']['psnr'] - 3
    assert '## By rain preset' in (tmp_path / 'rep' / 'report.md').read_text()
    assert 'storm' in capsys.readouterr().out


def test_eval_with_the_flip_ensemble(tmp_path: Path) -> None:
    # The bundled model on two tiny built-in clips, as is, then with --flip-ensemble, whole clip
    # and streamed: each labelled as such, and the ensemble's output differs from the model's.
    common = ['eval', '--model', 'default', '--data', 'synthetic', '--clean-roots', '--clips', '2', '--frames', '2',
              '--size', '48', '64', '--presets', 'heavy', '--no-baselines', '--device', 'cpu']
    scores = {}
    runs = {'plain': ([], 'model'), 'ens': (['--flip-ensemble'], 'model_flip_ensemble'),
            'ens_streamed': (['--flip-ensemble', '--streaming'], 'model_streaming_flip_ensemble')}
    for name, (extra, want) in runs.items():
        assert main([*common, *extra, '--out', str(tmp_path / name)]) == 0
        data = json.loads((tmp_path / name / 'report.json').read_text())
        (label, method), = data['methods'].items()
        scores[name] = method['summary']['psnr']
        assert label == want
    assert scores['ens'] != scores['plain']
    # streamed and whole-clip ensembles agree to uint8 rounding
    assert abs(scores['ens'] - scores['ens_streamed']) < 0.1, scores
