"""`rainmamba blend`: a fine-tune's weights mixed with its base's, and what it refuses."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rainmamba_core.cli import main
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
from rainmamba_core.train.blend import BlendError, blend_state_dicts


def _model(seed: int, **overrides) -> RainMamba:
    torch.manual_seed(seed)
    return RainMamba(RainMambaConfig.tiny(**overrides))


def test_blend_mixes_every_float_tensor_by_the_share(tmp_path: Path, capsys) -> None:
    base, tuned = _model(0), _model(1)
    base.save_checkpoint(tmp_path / 'base.pt', extra={'training': {'train_config': {'seed': 'base'}}})
    tuned.save_checkpoint(tmp_path / 'tuned.pt', extra={'training': {'train_config': {'seed': 'tuned'}}})
    for alpha in (0.0, 0.3, 1.0):
        out = tmp_path / f'blend{alpha}.pt'
        assert main(['blend', str(tmp_path / 'base.pt'), str(tmp_path / 'tuned.pt'), '--alpha', str(alpha),
                     '--out', str(out)]) == 0
        got = RainMamba.from_checkpoint(out).state_dict()
        b, t = base.state_dict(), tuned.state_dict()
        floats = [k for k in b if b[k].is_floating_point()]
        assert floats and any(not torch.equal(b[k], t[k]) for k in floats), 'the two models must differ'
        for k in b:
            want = (1 - alpha) * b[k] + alpha * t[k] if b[k].is_floating_point() else b[k]
            torch.testing.assert_close(got[k], want, rtol=1e-6, atol=1e-7, msg=k)  # float32 rounding of lerp
        stored = torch.load(out, map_location='cpu', weights_only=True)['training']['blend']
        assert stored['alpha'] == alpha and stored['tuned'].endswith('tuned.pt')
        # both inputs' training summaries travel with the blend (a blend of blends keeps them all)
        assert stored['base_training'] == {'train_config': {'seed': 'base'}}
        assert stored['tuned_training'] == {'train_config': {'seed': 'tuned'}}
    again = tmp_path / 'blend_of_blends.pt'
    assert main(['blend', str(tmp_path / 'base.pt'), str(tmp_path / 'blend0.3.pt'), '--alpha', '0.5',
                 '--out', str(again)]) == 0
    nested = torch.load(again, map_location='cpu', weights_only=True)['training']['blend']
    assert nested['tuned_training']['blend']['alpha'] == 0.3
    assert nested['tuned_training']['blend']['tuned_training'] == {'train_config': {'seed': 'tuned'}}
    assert 'rainmamba blend: 0.7 x' in capsys.readouterr().out


def test_blend_takes_the_fine_tune_s_weight_free_keys(tmp_path: Path, capsys) -> None:
    """A fine-tune that switched on the thin-brightening filter (no weights of its own) blends with
    its base; the blend runs with the filter, and says so. Other differences are still refused."""
    aligned = {'detail_channels': 8, 'detail_previous': True, 'detail_align': True}
    base, tuned = _model(0, **aligned), _model(1, **aligned, detail_align_thin=5)
    base.save_checkpoint(tmp_path / 'base.pt')
    tuned.save_checkpoint(tmp_path / 'tuned.pt')
    assert main(['blend', str(tmp_path / 'base.pt'), str(tmp_path / 'tuned.pt'), '--alpha', '0.5',
                 '--out', str(tmp_path / 'c.pt')]) == 0
    assert 'takes the fine-tune\'s detail_align_thin: 0 -> 5' in capsys.readouterr().out
    got = RainMamba.from_checkpoint(tmp_path / 'c.pt')
    assert got.config.detail_align_thin == 5
    b, t = base.state_dict(), tuned.state_dict()
    for k, v in got.state_dict().items():
        want = 0.5 * b[k] + 0.5 * t[k] if v.is_floating_point() else b[k]
        torch.testing.assert_close(v, want, rtol=1e-6, atol=1e-7, msg=k)  # float32 rounding of lerp
    # the other way round the blend runs without it; a second difference is refused with both named
    assert main(['blend', str(tmp_path / 'tuned.pt'), str(tmp_path / 'base.pt'), '--alpha', '0.5',
                 '--out', str(tmp_path / 'd.pt')]) == 0
    assert RainMamba.from_checkpoint(tmp_path / 'd.pt').config.detail_align_thin == 0
    _model(2, **aligned, detail_align_thin=5, detail_align_frames=2).save_checkpoint(tmp_path / 'two.pt')
    assert main(['blend', str(tmp_path / 'base.pt'), str(tmp_path / 'two.pt'), '--alpha', '0.5',
                 '--out', str(tmp_path / 'e.pt')]) == 2
    assert 'different architectures (detail_align_frames: 1 vs 2)' in capsys.readouterr().err
    assert not (tmp_path / 'e.pt').exists()


def test_blend_refuses_what_it_cannot_mix(tmp_path: Path, capsys) -> None:
    _model(0).save_checkpoint(tmp_path / 'a.pt')
    _model(1, detail_channels=8).save_checkpoint(tmp_path / 'b.pt')
    assert main(['blend', str(tmp_path / 'a.pt'), str(tmp_path / 'b.pt'), '--alpha', '0.5',
                 '--out', str(tmp_path / 'c.pt')]) == 2
    err = capsys.readouterr().err
    assert 'different architectures (detail_channels: 0 vs 8)' in err, err
    # a key added after the first release, at its default in one model, is named with that value
    aligned = {'detail_channels': 8, 'detail_previous': True, 'detail_align': True}
    _model(0, **aligned).save_checkpoint(tmp_path / 'one.pt')
    _model(0, **aligned, detail_align_frames=2).save_checkpoint(tmp_path / 'two.pt')
    assert main(['blend', str(tmp_path / 'one.pt'), str(tmp_path / 'two.pt'), '--alpha', '0.5',
                 '--out', str(tmp_path / 'c.pt')]) == 2
    err = capsys.readouterr().err
    assert 'different architectures (detail_align_frames: 1 vs 2)' in err, err
    assert main(['blend', str(tmp_path / 'a.pt'), str(tmp_path / 'a.pt'), '--alpha', '1.5',
                 '--out', str(tmp_path / 'c.pt')]) == 2
    assert 'alpha=1.5: expected a share in [0, 1]' in capsys.readouterr().err
    assert main(['blend', str(tmp_path / 'a.pt'), str(tmp_path / 'a.pt'), '--alpha', '0.5',
                 '--out', str(tmp_path / 'a.pt')]) == 2
    assert 'is one of the inputs' in capsys.readouterr().err
    assert not (tmp_path / 'c.pt').exists()
    a = {'w': torch.zeros(2), 'n': torch.tensor(3)}
    with pytest.raises(BlendError, match='only in the fine-tune: extra'):
        blend_state_dicts(a, {**a, 'extra': torch.zeros(1)}, 0.5)
    with pytest.raises(BlendError, match=r'w \(2,\)/torch.float32 vs \(3,\)/torch.float32'):
        blend_state_dicts(a, {**a, 'w': torch.zeros(3)}, 0.5)
    with pytest.raises(BlendError, match='integer tensors differ .*: n'):
        blend_state_dicts(a, {**a, 'n': torch.tensor(4)}, 0.5)


def test_blend_sets_an_option_that_adds_no_weights_and_refuses_any_other(tmp_path: Path, capsys) -> None:
    """--set puts the novelty clamp on (or off) the result; the weights stay the blend's."""
    aligned = {'detail_channels': 8, 'detail_previous': True, 'detail_align': True}
    base, tuned = _model(0, **aligned), _model(1, **aligned)
    base.save_checkpoint(tmp_path / 'base.pt')
    tuned.save_checkpoint(tmp_path / 'tuned.pt')
    assert main(['blend', str(tmp_path / 'base.pt'), str(tmp_path / 'tuned.pt'), '--alpha', '0.25',
                 '--set', 'novelty_clamp=1.0', '--set', 'novelty_clamp_frames=3', '--out', str(tmp_path / 'c.pt')]) == 0
    assert 'set novelty_clamp=1.0, novelty_clamp_frames=3' in capsys.readouterr().out
    got = RainMamba.from_checkpoint(tmp_path / 'c.pt')
    assert (got.config.novelty_clamp, got.config.novelty_clamp_fade, got.config.novelty_clamp_frames) == (1.0, 0.6, 3)
    b, t = base.state_dict(), tuned.state_dict()
    for k, v in got.state_dict().items():
        want = 0.75 * b[k] + 0.25 * t[k] if v.is_floating_point() else b[k]
        torch.testing.assert_close(v, want, rtol=1e-6, atol=1e-7, msg=k)  # float32 rounding of lerp
    # the clamped model blended with itself and the clamp set to 0: the same weights, the clamp off
    assert main(['blend', str(tmp_path / 'c.pt'), str(tmp_path / 'c.pt'), '--alpha', '0',
                 '--set', 'novelty_clamp=0', '--out', str(tmp_path / 'off.pt')]) == 0
    off = RainMamba.from_checkpoint(tmp_path / 'off.pt')
    assert off.config.novelty_clamp == 0.0
    assert all(torch.equal(v, got.state_dict()[k]) for k, v in off.state_dict().items())
    # the head's alignment by tiles: an integer option, the weights as they were
    assert main(['blend', str(tmp_path / 'c.pt'), str(tmp_path / 'c.pt'), '--alpha', '0',
                 '--set', 'detail_align_tiles=3', '--out', str(tmp_path / 'tiles.pt')]) == 0
    assert RainMamba.from_checkpoint(tmp_path / 'tiles.pt').config.detail_align_tiles == 3
    for bad, why in [('detail_channels=16', 'KEY one of detail_align_thin, detail_align_tiles, novelty_clamp'),
                     ('novelty_clamp', 'expected KEY=VALUE'), ('novelty_clamp=much', "'much' is not a number"),
                     ('novelty_clamp_frames=7', 'must be 1, 2 or 3'), ('detail_align_tiles=5', '2-4 tiles a side')]:
        assert main(['blend', str(tmp_path / 'base.pt'), str(tmp_path / 'tuned.pt'), '--alpha', '0.5',
                     '--set', bad, '--out', str(tmp_path / 'x.pt')]) == 2
        assert why in capsys.readouterr().err, bad
    assert not (tmp_path / 'x.pt').exists()
    _model(0).save_checkpoint(tmp_path / 'plain.pt')   # a clamp needs the aligned head
    assert main(['blend', str(tmp_path / 'plain.pt'), str(tmp_path / 'plain.pt'), '--alpha', '0.5',
                 '--set', 'novelty_clamp=1', '--out', str(tmp_path / 'x.pt')]) == 2
    assert 'needs detail_previous=True and detail_align=True' in capsys.readouterr().err


def test_the_bundled_model_s_clamp_switches_off_with_its_weights_unchanged(tmp_path: Path, capsys) -> None:
    """What docs/ros.md tells a user: `blend default default --alpha 0 --set novelty_clamp=0`."""
    from rainmamba_core.models.rainmamba import load_default_model
    from rainmamba_core.paths import DEFAULT_MODEL
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f'{DEFAULT_MODEL} is not in this checkout')
    bundled = load_default_model()
    assert bundled.config.novelty_clamp > 0   # the shipped model runs with the clamp
    assert main(['blend', 'default', 'default', '--alpha', '0', '--set', 'novelty_clamp=0',
                 '--out', str(tmp_path / 'no_clamp.pt')]) == 0
    off = RainMamba.from_checkpoint(tmp_path / 'no_clamp.pt')
    assert off.config.novelty_clamp == 0.0
    assert all(torch.equal(v, bundled.state_dict()[k]) for k, v in off.state_dict().items())
    assert main(['blend', 'default', 'default', '--alpha', '0', '--out', str(DEFAULT_MODEL)]) == 2
    assert 'is one of the inputs' in capsys.readouterr().err
