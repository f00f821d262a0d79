"""Global alignment (phase correlation + warp) and the detail head that reads the aligned previous frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stream_helpers import assert_streams_carrying, blind_to_previous, stream_rel_error

from rainmamba_core.models.config import LATE_KEYS, ConfigError
from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
from rainmamba_core.ops.align import (
    agreed_difference,
    aligned_difference,
    phase_shift,
    shift_field,
    thin_brightening,
    translate,
    warp,
)


def _scene(seed: int, height: int = 480, width: int = 640) -> torch.Tensor:
    """A smooth random texture, (1, 3, height, width): structure at several scales, like a photo."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=g)
    fine = torch.rand(1, 3, height // 2, width // 2, generator=g)
    return (0.7 * F.interpolate(coarse, size=(height, width), mode='bicubic', align_corners=False)
            + 0.3 * F.interpolate(fine, size=(height, width), mode='bilinear', align_corners=False)).clamp(0, 1)


@pytest.mark.parametrize('dy,dx', [(0, 0), (3, -5), (-7, 12), (20, 2)])
def test_phase_shift_finds_an_integer_pan(dy: int, dx: int) -> None:
    big = _scene(1, 300, 400)
    previous = big[..., 40:280, 40:360]
    current = big[..., 40 - dy:280 - dy, 40 - dx:360 - dx]   # current(y, x) = previous(y - dy, x - dx)
    shift = phase_shift(current, previous)[0]
    # the peak is found on 2x2-pooled frames and refined by a parabola: within half a pixel of the truth
    assert abs(shift[0] - dy) <= 0.5 and abs(shift[1] - dx) <= 0.5, shift


@pytest.mark.parametrize('height,width', [(240, 320), (90, 126)])
def test_the_dft_path_gives_the_fft_path_s_shift(height: int, width: int) -> None:
    """The matrix-product DFT (what an ONNX graph carries) finds the FFT's peak and sub-pixel vertex."""
    big = _scene(5, height + 40, width + 40)
    previous = big[..., 20:20 + height, 20:20 + width]
    current = torch.cat([big[..., 17:17 + height, 26:26 + width], big[..., 20:20 + height, 20:20 + width]])
    previous = previous.expand(2, -1, -1, -1)
    fft, dft = phase_shift(current, previous, 'fft'), phase_shift(current, previous, 'dft')
    # float32 sums in another order: the vertex moves by rounding only (1e-3 px); a different peak is >= 2 px
    assert torch.allclose(fft, dft, atol=1e-3), (fft, dft)
    assert abs(fft[0, 0] - 3) <= 0.5 and abs(fft[0, 1] + 6) <= 0.5 and fft[1].abs().max() <= 0.5, fft
    with pytest.raises(ValueError, match="'fft' or 'dft'"):
        phase_shift(current, previous, 'fast')


def test_aligned_difference_keeps_the_frames_dtype() -> None:
    # computed in float32 (grid_sample has no fp16 CPU kernel) and returned in the frames' dtype
    a, b = _scene(6, 64, 96), _scene(7, 64, 96)
    out = aligned_difference(a.half(), b.half(), torch.tensor([True]))
    ref = aligned_difference(a, b, torch.tensor([True]))
    assert out.dtype == torch.float16
    assert (out.float() - ref).abs().max() < 2e-3  # fp16 rounding of inputs in [0, 1]: ~5e-4 per value


def test_phase_shift_finds_a_sub_pixel_pan_and_translate_undoes_it() -> None:
    previous = _scene(2, 240, 320)
    current, inside = translate(previous, torch.tensor([[2.5, -3.25]]))
    shift = phase_shift(current, previous)[0]
    assert abs(shift[0] - 2.5) <= 0.5 and abs(shift[1] + 3.25) <= 0.5, shift
    moved, mask = translate(previous, shift[None])
    interior = (mask * inside).bool().expand_as(current)
    before = (previous - current)[interior].abs().mean()
    after = (moved - current)[interior].abs().mean()
    assert after < before / 4, (before, after)   # aligned: most of the frame difference is gone


def test_translate_by_whole_pixels_is_a_shift_and_marks_what_came_from_outside() -> None:
    frames = torch.rand(2, 3, 20, 30)
    moved, inside = translate(frames, torch.tensor([[2.0, -3.0], [0.0, 0.0]]))
    assert torch.allclose(moved[0, :, 2:, :27], frames[0, :, :18, 3:], atol=1e-5)  # bilinear at whole pixels
    assert inside[0, 0, :2].sum() == 0 and inside[0, 0, :, 27:].sum() == 0
    assert inside[0, 0, 2:, :27].min() == 1
    assert torch.allclose(moved[1], frames[1], atol=1e-5) and inside[1].min() == 1


def test_aligned_difference_is_zero_without_a_previous_frame_and_small_after_a_pan() -> None:
    big = _scene(3, 200, 260)
    previous, current = big[..., 10:170, 10:230], big[..., 6:166, 14:234]
    both = aligned_difference(torch.cat([current, current]), torch.cat([previous, previous]),
                              torch.tensor([True, False]))
    assert both[1].abs().max() == 0                    # no previous frame: nothing to compare
    raw = (previous - current).abs().mean()
    assert both[0].abs().mean() < raw / 4, (both[0].abs().mean(), raw)


def test_rain_does_not_move_the_shift_on_nturain_a2(shared) -> None:
    """a2's camera pans 2-6 px a frame; its rain falls on its own. The shift measured on the rainy
    frames must be the scene's (the clean frames') shift, or the head would compare streaks."""
    from rainmamba_core.data.clips import read_image
    root = shared.path('data', 'nturain_a2')

    def load(name: str) -> torch.Tensor:
        files = sorted((root / name).iterdir())
        return torch.from_numpy(np.stack([read_image(f) for f in files])).permute(0, 3, 1, 2).float() / 255

    clean, rainy = load('a2_GT'), load('a2_Rain')
    on_clean = phase_shift(clean[1:], clean[:-1])
    on_rain = phase_shift(rainy[1:], rainy[:-1])
    assert on_clean[:, 1].abs().max() > 3               # the camera does pan (else the test shows nothing)
    # 0.1 px: a tenth of what moves a thin streak into the next pixel
    assert (on_clean - on_rain).abs().max() <= 0.1, torch.cat([on_clean, on_rain], 1)


def test_phase_shift_agrees_with_opencv_on_nturain_a2(shared) -> None:
    """An independent estimator (OpenCV's phaseCorrelate at full resolution, as the suite's
    real-rain masks use it) finds the same pans on a2's rainy frames."""
    pytest.importorskip('cv2')
    from rainmamba_core.data.clips import read_image
    from rainmamba_core.eval.suite import _global_shift
    files = sorted((shared.path('data', 'nturain_a2') / 'a2_Rain').iterdir())
    frames = np.stack([read_image(f) for f in files])
    ours = phase_shift(torch.from_numpy(frames[1:]).permute(0, 3, 1, 2).float(),
                       torch.from_numpy(frames[:-1]).permute(0, 3, 1, 2).float())
    theirs = torch.tensor([_global_shift(frames[i + 1], frames[i])[::-1] for i in range(len(frames) - 1)])
    # two sub-pixel estimators (a parabola on 2x2-pooled frames; a 5x5 centroid at full size): on
    # a2 they differ by up to 0.4 px; a wrong sign or a whole-pixel error would be >= 1 px
    assert (ours - theirs).abs().max() <= 0.5, torch.cat([ours, theirs], 1)


# ------------------------------------------------------------------ the model option
def _aligned_model(seed: int) -> RainMamba:
    torch.manual_seed(seed)
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True)).eval()
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)   # a head that contributes
    return model


def test_detail_align_needs_the_previous_frame_and_is_a_late_key() -> None:
    with pytest.raises(ConfigError, match='needs detail_previous=True'):
        RainMambaConfig.tiny(detail_channels=8, detail_align=True)
    assert 'detail_align' in LATE_KEYS and 'detail_align' not in RainMambaConfig.tiny().to_dict()
    assert RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True).to_dict()['detail_align']


@pytest.mark.parametrize('height,width', [(40, 56), (50, 66)])
def test_an_aligned_head_streams_like_the_whole_clip(height: int, width: int) -> None:
    # the same ops on the same frames, grouped differently: float rounding only (DESIGN.md's 1e-5)
    assert stream_rel_error(_aligned_model(11), torch.rand(2, 5, 3, height, width)) <= 1e-5


def test_an_aligned_head_sees_only_what_the_pan_does_not_explain() -> None:
    """Frame 1 is frame 0 panned: the head's input is (nearly) zero there, so the output equals that
    of a model blind to the previous frame; a new bright line in frame 1 changes it."""
    model = _aligned_model(12)
    blind = blind_to_previous(model)
    big = _scene(4, 120, 150)
    panned = torch.stack([big[..., 20:84, 20:116], big[..., 17:81, 24:120]], 1)   # (1, 2, 3, 64, 96)
    with torch.no_grad():
        gap = (model(panned) - blind(panned))[:, 1].abs()
        streak = panned.clone()
        streak[:, 1, :, 10:50, 40:42] = 1.0
        gap_streak = (model(streak) - blind(streak))[:, 1].abs()
    assert gap[..., 8:-8, 8:-8].mean() < gap_streak[..., 8:-8, 8:-8].mean() / 3, (gap.mean(), gap_streak.mean())


# ------------------------------------------------------------------ several earlier frames
def _panned_clip(streaks: dict[int, tuple[int, int]]) -> torch.Tensor:
    """Three frames (3, 3, 96, 128) of one scene panning 3 px down and 4 px right a frame, and in
    frame t a bright 2-px upright streak at columns ``streaks[t]`` (rows 20-70), nowhere else."""
    big = _scene(21, 160, 200)
    frames = torch.cat([big[..., 30 - 3 * t:126 - 3 * t, 30 - 4 * t:158 - 4 * t] for t in range(3)])
    for t, (left, right) in streaks.items():
        frames[t, :, 20:70, left:right] = 1.0
    return frames


def test_agreed_difference_keeps_this_frame_s_rain_and_drops_the_last_frame_s() -> None:
    """One earlier frame: its difference holds this frame's streak and the last frame's streak (moved
    by the pan, opposite sign). Two earlier frames: the last frame's streak is in one difference
    only, so it is dropped, and this frame's, in both, is kept."""
    frames = _panned_clip({2: (60, 62), 1: (96, 98)})
    cur, last, before = frames[2:3], frames[1:2], frames[0:1]
    ok = torch.ones(1, dtype=torch.bool)
    one = agreed_difference(cur, [last], [ok])
    assert torch.equal(one, aligned_difference(cur, last, ok))
    two = agreed_difference(cur, [last, before], [ok, ok])
    rain = (slice(None), slice(None), slice(25, 65), slice(60, 62))
    ghost = (slice(None), slice(None), slice(25, 65), slice(100, 102))   # frame 1's streak moved 4 px right
    # the scene is smooth and the pan is undone to about a pixel: away from the streaks both
    # differences are a few hundredths; a streak is 0.3-1.0 brighter than this scene
    assert one[ghost].mean() > 0.2 and one[rain].mean() < -0.2, (one[ghost].mean(), one[rain].mean())
    assert two[ghost].abs().mean() < 0.05, two[ghost].abs().mean()
    assert two[rain].mean() < -0.2 and (two[rain] - one[rain]).abs().max() < 0.05
    # the difference that survives is never larger than either one alone
    assert (two.abs() <= one.abs() + 1e-6).all()


def test_agreed_difference_uses_the_frames_that_exist() -> None:
    frames = _panned_clip({2: (60, 62)})
    cur, last, before = frames[2:3], frames[1:2], frames[0:1]
    yes, no = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)
    assert torch.equal(agreed_difference(cur, [last, before], [yes, no]), aligned_difference(cur, last, yes))
    assert torch.equal(agreed_difference(cur, [last, before], [no, yes]), aligned_difference(cur, before, yes))
    assert not agreed_difference(cur, [last, before], [no, no]).any()
    with pytest.raises(ValueError, match='2 earlier frames and 1 validity'):
        agreed_difference(cur, [last, before], [yes])


def test_detail_align_frames_is_checked_and_a_late_key() -> None:
    with pytest.raises(ConfigError, match='needs detail_align=True'):
        RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align_frames=2)
    with pytest.raises(ConfigError, match='must be 1, 2 or 3'):
        RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True, detail_align_frames=4)
    aligned = dict(detail_channels=8, detail_previous=True, detail_align=True)
    assert 'detail_align_frames' not in RainMambaConfig.tiny(**aligned).to_dict()   # older packages load it
    cfg = RainMambaConfig.tiny(detail_align_frames=3, **aligned).to_dict()
    assert RainMambaConfig.from_dict(cfg).detail_align_frames == 3


@pytest.mark.parametrize('frames', [2, 3])
def test_a_head_reading_several_earlier_frames_streams_like_the_whole_clip(frames: int) -> None:
    torch.manual_seed(13)
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True,
                                           detail_align_frames=frames)).eval()
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)
    assert_streams_carrying(model, frames)


# ------------------------------------------------------------------ thin bright parts only
def test_thin_brightening_keeps_this_frame_s_streak_and_drops_bands_and_the_last_frame_s_rain() -> None:
    """A panned scene; in the current frame a 2-px streak and a 14-px wide bright band (an object that
    moved on its own), in the last frame a streak elsewhere. The raw aligned difference holds all
    three; the filtered one holds the current streak only."""
    frames = _panned_clip({2: (60, 62), 1: (96, 98)})
    frames[2, :, 20:70, 20:34] = 1.0
    cur, last = frames[2:3], frames[1:2]
    ok = torch.ones(1, dtype=torch.bool)
    raw = aligned_difference(cur, last, ok)
    thin = thin_brightening(raw, 5)
    rows = slice(25, 65)
    rain, band = (..., rows, slice(60, 62)), (..., rows, slice(22, 32))
    ghost = (..., rows, slice(100, 102))   # the last frame's streak, moved 4 px right by the pan
    assert raw[band].mean() < -0.2 and raw[ghost].mean() > 0.2, (raw[band].mean(), raw[ghost].mean())
    # the streak stands 0.3-1.0 above a smooth scene: what the top-hat keeps of it is the streak less
    # the scene's few-hundredths variation across 5 px
    assert thin[rain].mean() < -0.2 and (thin[rain] - raw[rain]).abs().max() < 0.08
    # of the band only the scene's own thin dark texture behind it shows (as brightening): a fifth at most
    assert thin[band].abs().mean() < raw[band].abs().mean() / 5, (thin[band].abs().mean(), raw[band].abs().mean())
    assert thin[ghost].abs().max() < 1e-6
    assert (thin <= 0).all() and (thin.abs() <= raw.clamp(max=0).abs() + 1e-6).all()
    # a streak as wide as the top-hat is no longer thin
    assert thin_brightening(raw, 3)[rain].abs().mean() < thin[rain].abs().mean()
    with pytest.raises(ValueError, match='odd and >= 3'):
        thin_brightening(raw, 4)


def test_detail_align_thin_is_checked_and_a_late_key() -> None:
    aligned = dict(detail_channels=8, detail_previous=True, detail_align=True)
    with pytest.raises(ConfigError, match='needs detail_align=True'):
        RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align_thin=5)
    for bad in (1, 4, -3):
        with pytest.raises(ConfigError, match='odd width >= 3'):
            RainMambaConfig.tiny(detail_align_thin=bad, **aligned)
    assert 'detail_align_thin' in LATE_KEYS and 'detail_align_thin' not in RainMambaConfig.tiny(**aligned).to_dict()
    cfg = RainMambaConfig.tiny(detail_align_thin=5, **aligned).to_dict()
    assert RainMambaConfig.from_dict(cfg).detail_align_thin == 5


def test_a_head_reading_thin_brightening_streams_like_the_whole_clip_and_ignores_the_rest() -> None:
    torch.manual_seed(14)
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True,
                                           detail_align_thin=5)).eval()
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)
    # the same ops on the same frames, grouped differently: float rounding only (DESIGN.md's 1e-5)
    assert stream_rel_error(model, torch.rand(2, 5, 3, 40, 56)) <= 1e-5
    # the last frame's streak (only in the earlier frame) no longer reaches the head: the output
    # stays within a twentieth of the raw head's departure from a model blind to the previous frame
    clip = _panned_clip({1: (96, 98)})[None]
    raw = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True))
    raw.load_state_dict(model.state_dict())
    blind = blind_to_previous(model)
    with torch.no_grad():
        gap_thin = (model(clip) - blind(clip))[:, 2].abs()
        gap_raw = (raw.eval()(clip) - blind(clip))[:, 2].abs()
    assert gap_raw.max() > 1e-3 and gap_thin.max() < gap_raw.max() / 20, (gap_thin.max(), gap_raw.max())


# ------------------------------------------------------------------ a shift per tile (detail_align_tiles)
def test_shift_field_follows_a_pan_everywhere() -> None:
    big = _scene(1, 140, 180)
    prev, cur = big[..., 20:116, 20:148], big[..., 19:115, 18:146]   # cur(y, x) = prev(y - 1, x - 2)
    field = shift_field(cur, prev, 3)
    assert field.shape == (1, 2, 96, 128)
    # each tile is a quarter of the frame (24x32 after the 2x pooling): its sub-pixel peak is less
    # sure than the whole frame's (measured up to 0.45 px on this texture), half a pixel is the bound
    assert (field[:, 0] - 1).abs().max() <= 0.5 and (field[:, 1] - 2).abs().max() <= 0.5
    with pytest.raises(ValueError, match='tiles must be >= 2'):
        shift_field(cur, prev, 1)


def test_tiles_align_the_scene_and_an_object_moving_on_its_own() -> None:
    """A textured object moves 4 px right over a still background: one translation follows one of
    the two (here the object, which has the contrast) and leaves the other's edges in the
    difference; a shift per tile aligns both."""
    bg = 0.4 + 0.1 * _scene(2, 96, 128)
    obj = _scene(3, 64, 64)
    prev, cur = bg.clone(), bg.clone()
    prev[..., 4:44, 4:44] = obj[..., 10:50, 10:50]
    cur[..., 4:44, 8:48] = obj[..., 10:50, 10:50]
    one = torch.ones(1, dtype=torch.bool)
    single = agreed_difference(cur, [prev], [one]).abs()
    tiled = agreed_difference(cur, [prev], [one], tiles=3).abs()
    regions = (..., slice(4, 44), slice(8, 48)), (..., slice(60, None), slice(80, None))  # object, far background

    def worst(diff: torch.Tensor) -> float:
        return max(diff[r].mean().item() for r in regions)
    # one shift leaves one of the two misaligned (measured 0.0125 here), the tiles neither (0.0026):
    # a factor of 4 leaves room for rounding and still fails when either part stays misaligned
    assert worst(tiled) < 0.25 * worst(single)
    assert tiled.mean() < 0.6 * single.mean()   # the whole frame too (measured 0.56: the tiles between blend)
    moved, inside = warp(prev, torch.zeros(1, 2, 96, 128))
    assert torch.allclose(moved, prev, atol=1e-6) and bool(inside.all())       # no shift: the frame


def test_detail_align_tiles_is_checked_and_a_late_key() -> None:
    aligned = dict(detail_channels=8, detail_previous=True, detail_align=True)
    with pytest.raises(ConfigError, match='0 \\(one shift\\) or 2-4 tiles a side, with detail_align=True'):
        RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align_tiles=3)
    for bad in (1, 5):
        with pytest.raises(ConfigError, match='2-4 tiles a side'):
            RainMambaConfig.tiny(detail_align_tiles=bad, **aligned)
    assert 'detail_align_tiles' in LATE_KEYS and 'detail_align_tiles' not in RainMambaConfig.tiny(**aligned).to_dict()
    cfg = RainMambaConfig.tiny(detail_align_tiles=3, **aligned).to_dict()
    assert RainMambaConfig.from_dict(cfg).detail_align_tiles == 3


def test_a_head_aligning_tiles_streams_like_the_whole_clip_and_reads_them() -> None:
    torch.manual_seed(11)
    model = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True,
                                           detail_align_tiles=3)).eval()
    torch.nn.init.normal_(model.detail.out.weight, std=0.05)
    torch.nn.init.normal_(model.detail.body[0].weight, std=0.05)
    assert_streams_carrying(model, 1)
    one = RainMamba(RainMambaConfig.tiny(detail_channels=8, detail_previous=True, detail_align=True)).eval()
    one.load_state_dict(model.state_dict())
    clip = torch.rand(1, 3, 3, 48, 64)
    with torch.no_grad():
        assert (model(clip)[:, 1:] - one(clip)[:, 1:]).abs().max() > 1e-4   # the tiles reach the output
