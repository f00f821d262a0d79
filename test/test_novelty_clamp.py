"""The novelty clamp: a quiet frame's change limited to what is new against aligned earlier frames."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from stream_helpers import assert_streams_carrying

from rainmamba_core.models.config import LATE_KEYS, ConfigError
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
from rainmamba_core.ops.align import REPEAT_LEVEL, novelty_clamp

GREY = 1 / 255


def _pan(seed: int = 3) -> torch.Tensor:
    """Three frames (3, 3, 96, 128) of a smooth scene panning 2 px down and 3 px right a frame, with
    a bright upright pole (columns 60-61 of the scene) in every frame and, in the last frame only,
    a bright rain streak at columns 100-101 (rows 20-70)."""
    g = torch.Generator().manual_seed(seed)
    big = F.interpolate(torch.rand(1, 3, 20, 25, generator=g), size=(160, 200), mode='bicubic',
                        align_corners=False).clamp(0.2, 0.6)
    big[..., 60:62] = 0.95
    frames = torch.cat([big[..., 30 - 2 * t:126 - 2 * t, 30 - 3 * t:158 - 3 * t] for t in range(3)])
    frames[2, :, 20:70, 100:102] = 0.95
    return frames


def _clamp(frames: torch.Tensor, out: torch.Tensor, full: float = 1.0, fade: float = 0.6,
           earlier: int = 2) -> torch.Tensor:
    prev = [frames[2 - j:3 - j] for j in range(1, earlier + 1)]
    return novelty_clamp(frames[2:], out, prev, [torch.ones(1, dtype=torch.bool)] * earlier, full, fade)


def _darkened(frames: torch.Tensor, level: float) -> torch.Tensor:
    """A model's output for the last frame: the pole and the streak darkened by 0.1, plus a uniform
    darkening that brings the frame's mean absolute change to ``level`` grey levels."""
    out = frames[2:].clone()
    pole = slice(36, 38)   # scene columns 60-61 sit at 60 - (30 - 3 * 2) in the last frame
    mask = torch.zeros_like(out, dtype=torch.bool)
    mask[..., 20:70, pole] = True
    mask[..., 20:70, 100:102] = True
    out[mask] -= 0.1
    rest = level * GREY * out.numel() - 0.1 * mask.sum().item()
    out[~mask] -= rest / (~mask).sum().item()
    return out


def test_a_quiet_frame_keeps_the_new_streak_s_change_and_undoes_the_pole_s() -> None:
    frames = _pan()
    assert (frames[2, :, 50, 36:38] > 0.9).all() and (frames[0, :, 50, 30:32] > 0.9).all()
    out = _darkened(frames, 0.5)
    got = _clamp(frames, out)
    streak = (got - frames[2:])[..., 25:65, 100:102]
    pole = (got - frames[2:])[..., 25:65, 36:38]
    # the streak is new (0.95 over a 0.2-0.6 scene): its whole darkening of 0.1 stays
    assert torch.allclose(streak, torch.full_like(streak, -0.1), atol=1e-6), streak.min()
    # the pole was there in both earlier frames: what is left of its darkening is the alignment's
    # sub-pixel interpolation error (a few grey levels at most), not the 0.1 (25.5 grey levels) given
    assert pole.abs().max() < 8 * GREY, pole.abs().max() * 255
    # the frame's quiet uniform darkening goes too, where the scene is not brighter than before
    assert (got - frames[2:])[..., 80:90, 10:20].abs().mean() < (out - frames[2:])[..., 80:90, 10:20].abs().mean() / 2


@pytest.mark.parametrize('level,weight', [(0.5, 1.0), (1.3, 0.5), (2.0, 0.0), (5.0, 0.0)])
def test_the_clamp_acts_in_full_on_quiet_frames_and_fades_out_over_the_fade(level: float, weight: float) -> None:
    frames = _pan()
    out = _darkened(frames, level)
    assert abs((out - frames[2:]).abs().mean().item() / GREY - level) < 1e-3
    full = _clamp(frames, out, full=1000.0)   # the clamp in full at any level
    got = _clamp(frames, out)                  # full up to 1 grey level, gone at 1.6
    # linear in between: the output is the share `weight` of the way from the model's to the clamped
    assert torch.allclose(got, out + weight * (full - out), atol=1e-6)
    if weight == 0.0:
        assert torch.equal(got, out)


def test_a_repeated_earlier_frame_counts_as_none_and_no_earlier_frame_keeps_the_change() -> None:
    frames = _pan()
    out = _darkened(frames, 0.5)
    repeat = frames[2:] + 0.5 * REPEAT_LEVEL * GREY   # a republished frame: below the repeat level
    got = novelty_clamp(frames[2:], out, [repeat], [torch.ones(1, dtype=torch.bool)], 1.0, 0.6)
    assert torch.equal(got, out)
    # the repeat and a real earlier frame: as the real one alone, which limits the change
    one = [torch.ones(1, dtype=torch.bool)]
    alone = novelty_clamp(frames[2:], out, [frames[1:2]], one, 1.0, 0.6)
    assert not torch.equal(alone, out)
    assert torch.equal(novelty_clamp(frames[2:], out, [repeat, frames[1:2]], one * 2, 1.0, 0.6), alone)
    # no earlier frame (a stream's first): the change is kept
    got = novelty_clamp(frames[2:], out, [frames[1:2]], [torch.zeros(1, dtype=torch.bool)], 1.0, 0.6)
    assert torch.equal(got, out)
    with pytest.raises(ValueError, match='expected the same number'):
        novelty_clamp(frames[2:], out, [frames[1:2]], [], 1.0, 0.6)


def test_the_config_checks_the_clamp_and_leaves_it_out_at_its_default() -> None:
    aligned = dict(detail_channels=8, detail_previous=True, detail_align=True)
    with pytest.raises(ConfigError, match='grey levels of mean change'):
        RainMambaConfig.tiny(novelty_clamp=-1.0, **aligned)
    with pytest.raises(ConfigError, match='grey levels of mean change'):
        RainMambaConfig.tiny(novelty_clamp=1.0, novelty_clamp_fade=-0.1, **aligned)
    with pytest.raises(ConfigError, match='must be 1, 2 or 3'):
        RainMambaConfig.tiny(novelty_clamp=1.0, novelty_clamp_frames=0, **aligned)
    with pytest.raises(ConfigError, match='needs detail_previous=True and detail_align=True'):
        RainMambaConfig.tiny(detail_channels=8, novelty_clamp=1.0)
    assert {'novelty_clamp', 'novelty_clamp_fade', 'novelty_clamp_frames'} <= set(LATE_KEYS)
    assert not {'novelty_clamp', 'novelty_clamp_fade', 'novelty_clamp_frames'} & set(
        RainMambaConfig.tiny(**aligned).to_dict())   # older packages still load the file
    cfg = RainMambaConfig.tiny(novelty_clamp=1.0, **aligned).to_dict()
    assert RainMambaConfig.from_dict(cfg).novelty_clamp == 1.0


def _clamped_model(frames: int = 2) -> RainMamba:
    torch.manual_seed(17)
    # a clamp threshold no random model's change reaches: the clamp always acts in full
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True,
                                           novelty_clamp=1000.0, novelty_clamp_frames=frames)).eval()
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)
    return model


@pytest.mark.parametrize('frames', [1, 2, 3])
def test_a_clamped_model_streams_like_the_whole_clip_and_carries_the_frames_it_compares(frames: int) -> None:
    # the head aligns one earlier frame; the clamp's frames are carried as well
    assert_streams_carrying(_clamped_model(frames), frames)


def test_the_clamp_acts_at_inference_only() -> None:
    model = _clamped_model()
    clip = _pan()[None]
    with torch.no_grad():
        clamped = model(clip)
        model.train()
        trained = model(clip)
    # training sees the network's own output (the clamp would hide its errors from the loss) ...
    plain = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True))
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(trained, plain.eval()(clip))
    # ... and the first frame (nothing earlier) is the same either way; the later ones are clamped
    assert torch.equal(clamped[:, 0], trained[:, 0])
    assert (clamped[:, 1:] - trained[:, 1:]).abs().max() > 10 * GREY
