"""The full-resolution detail head: off in the authors' layout, zero output when added to a
trained model, trained like any other part, and streamable (per frame, no state)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stream_helpers import step_all, stream_rel_error

from rainmamba_core.models.config import LATE_KEYS, ConfigError
from rainmamba_core.models.rainmamba import CheckpointError, RainMamba, RainMambaConfig
from rainmamba_core.train.config import config_from_dict
from rainmamba_core.train.trainer import build_model


def _cfg(init_from: Path, detail: int) -> object:
    return config_from_dict({
        'model': {'preset': 'tiny', 'causal': True, 'init_from': str(init_from),
                  'overrides': {'detail_channels': detail}},
        'data': {'kind': 'synthetic', 'clean_roots': ['unused'], 'frames': 2, 'crop': 32, 'batch': 1},
        'train': {'device': 'cpu'}})


def test_official_and_plain_tiny_have_no_detail_head() -> None:
    assert RainMambaConfig.official().detail_channels == 0
    model = RainMamba(RainMambaConfig.tiny())
    assert model.detail is None
    assert not any(k.startswith('detail.') for k in model.state_dict())


def test_negative_detail_channels_is_refused() -> None:
    with pytest.raises(ConfigError, match='detail_channels must be >= 0'):
        RainMambaConfig.tiny(detail_channels=-1)


def test_growing_a_trained_model_keeps_its_output_until_trained(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = RainMamba(RainMambaConfig.tiny()).eval()
    source.save_checkpoint(tmp_path / 'source.pt')
    grown = build_model(_cfg(tmp_path / 'source.pt', 8)).eval()
    assert grown.detail is not None
    clip = torch.rand(1, 2, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(grown(clip), source(clip))  # the head's last conv starts at zero

    # One optimiser step on a loss moves the head, and then the output.
    opt = torch.optim.SGD(grown.detail.parameters(), lr=0.1)
    loss = (grown(clip) - clip.flip(-1)).abs().mean()
    loss.backward()
    assert grown.detail.out.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        assert (grown(clip) - source(clip)).abs().max() > 1e-4


def test_init_from_a_model_of_another_shape_is_still_refused(tmp_path: Path) -> None:
    # Only the detail head may be added; a different decoder width must still fail with the keys listed.
    RainMamba(RainMambaConfig.tiny(decoder_channels=64)).save_checkpoint(tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match='mis-shaped keys'):
        build_model(_cfg(tmp_path / 'other.pt', 8))


def test_detail_checkpoint_round_trips_and_a_plain_model_refuses_it(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8)).eval()
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)
    model.save_checkpoint(tmp_path / 'detail.pt')
    loaded = RainMamba.from_checkpoint(tmp_path / 'detail.pt').eval()
    assert loaded.config.detail_channels == 8
    clip = torch.rand(1, 2, 3, 32, 40)
    with torch.no_grad():
        assert torch.equal(loaded(clip), model(clip))
    with pytest.raises(CheckpointError, match=r'unexpected keys \(6\): detail\.body'):
        RainMamba.from_checkpoint(tmp_path / 'detail.pt', config=RainMambaConfig.tiny())


@pytest.mark.parametrize('height,width', [(40, 56), (50, 66)])  # 50x66: padded, then cropped back
def test_stepping_a_detail_model_equals_the_whole_clip(height: int, width: int) -> None:
    torch.manual_seed(2)
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8)).eval()
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)
    rel = stream_rel_error(model, torch.rand(2, 4, 3, height, width))
    # Same bound and reason as test_model_causal: the same ops in the same order up to conv batching.
    assert rel <= 1e-5


def test_conv_last_riding_in_the_detail_heads_first_conv_equals_the_two_convs() -> None:
    # The decoder runs conv_last as 3 extra outputs of the detail head's first conv (zero weights
    # on the frame channels); the result must be conv_last(x) + head(x, frame), and gradients
    # must still reach conv_last (training goes through the same code).
    torch.manual_seed(4)
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8))
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)
    feats = torch.randn(1, 2, model.conv_last.in_channels, 24, 20)
    frames = torch.rand(1, 2, 3, 24, 20)
    head = model.detail
    w, b = model.conv_last.weight[:, :, 0], model.conv_last.bias
    merged = head(feats, frames, side=(w, b))
    x = torch.cat([feats, frames], 2).flatten(0, 1)
    separate = (head.out(head.body(x)) + torch.nn.functional.conv2d(feats.flatten(0, 1), w, b, padding=1)
                ).view(*frames.shape)
    rel = ((merged - separate).norm() / separate.norm()).item()
    print(f'rel {rel:.2e}')
    assert rel < 1e-6  # same sums per output channel; only oneDNN's blocking may reorder them
    merged.square().sum().backward()
    assert model.conv_last.weight.grad is not None and model.conv_last.weight.grad.abs().sum() > 0


def test_widening_a_trained_detail_head_keeps_its_output_until_trained(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = RainMamba(RainMambaConfig.tiny(detail_channels=8)).eval()
    torch.nn.init.normal_(source.detail.out.weight, std=0.05)  # a trained head: nonzero output
    source.save_checkpoint(tmp_path / 'narrow.pt')
    wide = build_model(_cfg(tmp_path / 'narrow.pt', 12)).eval()
    assert wide.detail.out.in_channels == 12
    clip = torch.rand(1, 2, 3, 40, 48)
    with torch.no_grad():
        before = source(clip)
        rel = ((wide(clip) - before).norm() / before.norm()).item()
    # The old channels' sums are the same terms plus exact zeros; only conv blocking may reorder them.
    assert rel < 1e-6
    with torch.no_grad():  # and the head does contribute: without it the output differs
        assert (source.detail(torch.zeros(1, 2, source.conv_last.in_channels, 8, 8), clip[..., :8, :8])
                ).abs().max() > 1e-4
    # The new channels learn: their weights in the last conv get gradients from the first step,
    # and once those are nonzero the new channels of the body get gradients too.
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        (wide(clip) - clip.flip(-1)).abs().mean().backward()
        assert wide.detail.out.weight.grad[:, 8:].abs().sum() > 0
        assert (wide.detail.body[2].weight.grad[8:].abs().sum() > 0) == (step == 1)
        opt.step()


def test_a_narrower_detail_head_is_refused_with_the_keys(tmp_path: Path) -> None:
    RainMamba(RainMambaConfig.tiny(detail_channels=12)).save_checkpoint(tmp_path / 'wide.pt')
    with pytest.raises(CheckpointError, match='mis-shaped keys'):
        build_model(_cfg(tmp_path / 'wide.pt', 8))


# ------------------------------------------------------------------ the head that sees the previous frame
def _prev_model(seed: int) -> RainMamba:
    torch.manual_seed(seed)
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True)).eval()
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)
    return model


def test_detail_previous_needs_a_head() -> None:
    with pytest.raises(ConfigError, match='detail_previous needs a detail head'):
        RainMambaConfig.tiny(detail_previous=True)


@pytest.mark.parametrize('height,width', [(40, 56), (50, 66)])  # 50x66: padded, then cropped back
def test_a_head_that_sees_the_previous_frame_streams_like_the_whole_clip(height: int, width: int) -> None:
    model = _prev_model(6)
    clip = torch.rand(2, 5, 3, height, width)
    with torch.no_grad():
        full = model(clip)
    assert tuple(model.init_state(2, height, width)['detail.prev'].shape) == (
        2, 3, 56 if height == 50 else 40, 72 if width == 66 else 56)
    stepped, state = step_all(model, clip)
    # the carried frame is the last (padded) input; the same ops as the whole clip: same bound as above
    assert torch.equal(state['detail.prev'][..., :height, :width], clip[:, -1])
    assert ((stepped - full).norm() / full.norm()).item() <= 1e-5


def test_the_previous_frame_changes_the_output_and_only_through_the_head() -> None:
    model = _prev_model(7)
    clip = torch.rand(1, 3, 3, 32, 40)
    other = clip.clone()
    other[:, 1] = torch.rand(3, 32, 40)          # frame 1 differs: frame 2 sees another previous frame
    with torch.no_grad():
        a, b = model(clip), model(other)
        assert (a[:, 2] - b[:, 2]).abs().max() > 1e-4
        nohead = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True)).eval()
        nohead.load_state_dict(model.state_dict())
        nohead.detail.body[0].weight[:, -3:] = 0   # the head blind to the previous frame again
        c, d = nohead(clip), nohead(other)
        # frame 2 still differs through the carried features (temporal caches), but less than with the head
        assert (c[:, 2] - d[:, 2]).abs().max() < (a[:, 2] - b[:, 2]).abs().max()


def test_growing_a_head_to_see_the_previous_frame_keeps_the_output(tmp_path: Path) -> None:
    torch.manual_seed(8)
    source = RainMamba(RainMambaConfig.tiny(detail_channels=8)).eval()
    torch.nn.init.normal_(source.detail.out.weight, std=0.05)   # a trained head
    source.save_checkpoint(tmp_path / 'plain.pt')
    cfg = _cfg(tmp_path / 'plain.pt', 8)
    cfg.model.overrides['detail_previous'] = True
    grown = build_model(cfg).eval()
    assert grown.config.detail_previous and grown.detail.body[0].in_channels == source.detail.body[0].in_channels + 3
    clip = torch.rand(1, 3, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(grown(clip), source(clip))   # exact zeros added to the same sums
    (grown(clip) - clip.flip(-1)).abs().mean().backward()
    assert grown.detail.body[0].weight.grad[:, -3:].abs().sum() > 0   # the new inputs learn at step 1
    with pytest.raises(CheckpointError, match='mis-shaped keys'):  # and a plain model refuses the grown one
        grown.save_checkpoint(tmp_path / 'grown.pt')
        RainMamba.from_checkpoint(tmp_path / 'grown.pt', config=RainMambaConfig.tiny(detail_channels=8))


def test_init_from_keeps_what_the_head_reads_unless_told_to_drop_it(tmp_path: Path) -> None:
    """A run from a model whose head reads the (aligned) previous frame keeps those inputs without
    being told (the bundled default has them); asking to drop them is refused, naming the key."""
    from rainmamba_core.errors import RainMambaError
    torch.manual_seed(9)
    source = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True)).eval()
    torch.nn.init.normal_(source.detail.out.weight, std=0.05)
    source.save_checkpoint(tmp_path / 'aligned.pt')
    kept = build_model(_cfg(tmp_path / 'aligned.pt', 8)).eval()
    assert kept.config.detail_previous and kept.config.detail_align
    clip = torch.rand(1, 3, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(kept(clip), source(clip))
    cfg = _cfg(tmp_path / 'aligned.pt', 8)
    cfg.model.overrides['detail_align'] = False
    with pytest.raises(RainMambaError, match='detail_align=True and model.overrides.detail_align=false'):
        build_model(cfg)


def test_checkpoint_config_leaves_out_late_keys_at_their_default(tmp_path: Path) -> None:
    """A model without the previous-frame head writes no `detail_previous` key, so its checkpoint
    loads in package versions from before the key existed (their from_dict refuses unknown keys,
    which is how the speed benchmark's reference revision reads today's bundled default)."""
    plain = RainMambaConfig.tiny(detail_channels=8)
    assert 'detail_previous' in LATE_KEYS and 'detail_previous' not in plain.to_dict()
    assert RainMambaConfig.from_dict(plain.to_dict()) == plain
    seeing = RainMambaConfig.tiny(detail_channels=8, detail_previous=True)
    assert seeing.to_dict()['detail_previous'] is True          # a set key is always written
    assert RainMambaConfig.from_dict(seeing.to_dict()) == seeing
    path = tmp_path / 'plain.pt'
    RainMamba(plain).save_checkpoint(path)
    stored = torch.load(path, weights_only=True)['config']
    assert 'detail_previous' not in stored
    assert RainMamba.from_checkpoint(path).config == plain


def test_detail_context_is_checked() -> None:
    with pytest.raises(ConfigError, match='detail_context must be >= 0'):
        RainMambaConfig.tiny(detail_channels=8, detail_context=-1)
    with pytest.raises(ConfigError, match='detail_context widens the detail head: it needs detail_channels'):
        RainMambaConfig.tiny(detail_context=4)
    assert 'detail_context' not in RainMambaConfig.tiny(detail_channels=8).to_dict()  # a late key


def _head_reach(model: RainMamba, size: int = 41) -> int:
    """How far (pixels, Chebyshev) from the centre an input pixel still changes the head's centre output."""
    head = model.detail
    frames = torch.zeros(1, 1, 3, size, size, requires_grad=True)
    feats = torch.zeros(1, 1, model.conv_last.in_channels, size, size)
    out = head(feats, frames)
    out[0, 0, :, size // 2, size // 2].sum().backward()
    ys, xs = (frames.grad[0, 0].abs().sum(0) > 0).nonzero(as_tuple=True)
    return int(torch.maximum((ys - size // 2).abs(), (xs - size // 2).abs()).max())


def test_a_context_block_widens_what_the_head_sees() -> None:
    """Three 3x3 convs see 3 pixels each way; two more dilated by 4 add 8 (the block's claim: a
    streak ends within the plain head's view, a mullion or a pole runs on beyond it)."""
    torch.manual_seed(10)
    plain = RainMamba(RainMambaConfig.tiny(detail_channels=8))
    wide = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_context=4))
    for model in (plain, wide):
        for p in model.detail.parameters():
            torch.nn.init.normal_(p, std=0.2)   # a trained head (the zero-initialised convs pass nothing)
    assert _head_reach(plain) == 3
    assert _head_reach(wide) == 3 + 2 * 4


def test_growing_a_head_by_a_context_block_keeps_the_output_and_streams(tmp_path: Path) -> None:
    torch.manual_seed(11)
    source = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True)).eval()
    torch.nn.init.normal_(source.detail.out.weight, std=0.05)   # a trained head
    source.save_checkpoint(tmp_path / 'aligned.pt')
    cfg = _cfg(tmp_path / 'aligned.pt', 8)
    cfg.model.overrides['detail_context'] = 3
    grown = build_model(cfg).eval()
    assert grown.config.detail_context == 3 and grown.config.detail_align  # what the head reads is kept
    clip = torch.rand(1, 3, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(grown(clip), source(clip))   # an identity block: the same sums
    (grown(clip) - clip.flip(-1)).abs().mean().backward()
    assert grown.detail.context[2].weight.grad.abs().sum() > 0   # the block's last conv learns at step 1
    torch.nn.init.normal_(grown.detail.context[2].weight, std=0.05)
    # the block is per frame: streaming equals the whole clip (bound and reason as the other stream tests)
    assert stream_rel_error(grown, torch.rand(1, 4, 3, 50, 66)) <= 1e-5
    grown.save_checkpoint(tmp_path / 'grown.pt')
    again = build_model(_cfg(tmp_path / 'grown.pt', 8)).eval()   # a run from it keeps the block
    assert again.config.detail_context == 3
    with torch.no_grad():
        assert torch.equal(again(clip), grown(clip))
    from rainmamba_core.errors import RainMambaError
    for other in (0, 4):   # another dilation has the same shapes: refused, not loaded silently
        cfg = _cfg(tmp_path / 'grown.pt', 8)
        cfg.model.overrides['detail_context'] = other
        with pytest.raises(RainMambaError, match=f'detail_context=3 and model.overrides.detail_context={other}'):
            build_model(cfg)
    with pytest.raises(CheckpointError, match='unexpected keys'):   # a model without the block refuses it
        RainMamba.from_checkpoint(tmp_path / 'grown.pt',
                                  config=RainMambaConfig.tiny(detail_channels=8, detail_previous=True,
                                                              detail_align=True))
