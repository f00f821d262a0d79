"""Official mode: keys, shapes, parameter count, parity with the authors' code, checkpoints."""
from __future__ import annotations

import zipfile

import pytest
import torch
from parity_weights import parity_state_dict, read_keys

from rainmamba_core.models.rainmamba import CheckpointError, RainMamba, RainMambaConfig, count_parameters


@pytest.fixture(scope='module')
def official() -> RainMamba:
    return RainMamba(RainMambaConfig.official()).eval()


def test_keys_shapes_and_count_match_the_authors(official, shared):
    keys = read_keys(shared.path('spec', 'official_generator_keys.txt'))
    own = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert [k for k, _ in keys] == list(own)  # same keys in the same order
    assert {k: s for k, s in keys} == own
    assert count_parameters(official) == 38_729_491


def test_parity_weights_match_published_checksums(shared):
    sd = parity_state_dict(shared.path('spec', 'official_generator_keys.txt'))
    lines = shared.path('spec', 'parity_weights_checksums.txt').read_text().splitlines()
    rows = [ln.split('\t') for ln in lines if ln and not ln.startswith('#')]
    assert len(rows) == len(sd)
    for key, s, ss in rows:
        t = sd[key].double()
        # float64 sums of identical float32 tensors agree to a few ulp of the sum's magnitude.
        assert t.sum().item() == pytest.approx(float(s), rel=1e-6, abs=1e-6), key
        assert (t * t).sum().item() == pytest.approx(float(ss), rel=1e-6), key


def test_official_output_matches_authors_code(official, shared):
    data = torch.load(shared.path('spec', 'parity_t5_128.pt'), map_location='cpu', weights_only=True)
    hil = shared.path('data', 'hilbert', data['curves'])
    curves = tuple(torch.load(hil / f'hilbert_curve_{s}_scale.pt', map_location='cpu', weights_only=True)
                   for s in ('large', 'small'))
    official.load_state_dict_strict(parity_state_dict(shared.path('spec', 'official_generator_keys.txt')))
    with torch.no_grad():
        out = official(data['input'], curves=curves)
    ref = data['output']
    rel = ((out - ref).norm() / ref.norm()).item()
    max_abs = (out - ref).abs().max().item()
    print(f'parity: rel L2 {rel:.3e}, max abs {max_abs:.3e}')
    # spec: fp32 noise floor vs fp64 is rel 2.4e-6 / max 2.5e-5; pass at rel < 1e-4 and max < 1e-3.
    assert rel < 1e-4 and max_abs < 1e-3
    # curves=None generates the scan orders; they must be the ones the authors' curves define.
    from rainmamba_core.ops.hilbert import authors_curve_to_raster, hilbert3d_raster_order
    assert torch.equal(hilbert3d_raster_order(32, 32, 5), authors_curve_to_raster(curves[0], 32, 32, 5))
    assert torch.equal(hilbert3d_raster_order(16, 16, 5), authors_curve_to_raster(curves[1], 16, 16, 5))


def _tiny_official() -> RainMamba:
    return RainMamba(RainMambaConfig.tiny(causal=False, residual_output=False))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = RainMamba(RainMambaConfig.tiny())
    path = tmp_path / 'm.pt'
    model.save_checkpoint(path, extra={'step': 7})
    loaded = RainMamba.from_checkpoint(path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    clip = torch.rand(1, 2, 3, 32, 40)
    with torch.no_grad():
        assert torch.equal(model.eval()(clip), loaded.eval()(clip))


def test_authors_mmediting_layout_loads(tmp_path):
    model = _tiny_official()
    sd = {f'generator.{k}': v for k, v in model.state_dict().items()}
    sd['step_counter'] = torch.zeros(1)
    sd['perceptual_loss.vgg.0.weight'] = torch.zeros(2, 2)
    path = tmp_path / 'authors.pth'
    torch.save({'meta': {'iter': 10}, 'state_dict': sd}, path)
    loaded = RainMamba.from_checkpoint(path, config=model.config)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / 'm.pt'
    RainMamba(RainMambaConfig.tiny()).save_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r'cannot read checkpoint .*m\.pt'):
        RainMamba.from_checkpoint(path)


def test_wrong_shape_and_foreign_key_are_listed(tmp_path):
    model = _tiny_official()
    sd = dict(model.state_dict())
    sd['conv_last.weight'] = torch.zeros(3, 5, 1, 3, 3)
    sd['foreign.weight'] = torch.zeros(1)
    del sd['conv_last.bias']
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': {f'generator.{k}': v for k, v in sd.items()}}, path)
    with pytest.raises(CheckpointError) as err:
        RainMamba.from_checkpoint(path, config=model.config)
    msg = str(err.value)
    assert 'missing keys (1): conv_last.bias' in msg
    assert 'unexpected keys (1): foreign.weight' in msg
    assert 'conv_last.weight: checkpoint (3, 5, 1, 3, 3) vs model (3, 4, 1, 3, 3)' in msg


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / 'evil.pt'
    torch.save({'state_dict': {}, 'obj': zipfile.ZipInfo('x')}, path)
    with pytest.raises(CheckpointError, match='weights_only'):
        RainMamba.from_checkpoint(path)
