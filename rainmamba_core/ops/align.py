"""Global frame alignment: a translation by phase correlation, and the warp that applies it.

The detail head of a ``detail_align`` model reads the previous input frame moved onto the current
one. A camera that pans moves the whole scene by about the same few pixels, while rain streaks
fall on their own; after the move a thin line that is in both frames is scene, one that is only in
the current frame is likely rain. One translation per frame pair is the cheapest alignment that
covers a pan; forward motion (a dash cam) is aligned only near the image centre, and the model
learns from the difference how far to trust it.

Dimension letters: N frame pairs, C channels, H height, W width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Phase correlation runs on frames averaged over 2x2 blocks: thin streaks blur into the scene,
# the FFT costs a quarter, and the sub-pixel peak still places the shift to about a pixel.
ALIGN_POOL = 2


def _dft_matrices(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of 2 pi k n / size (size x size), built in float64 and returned as float32."""
    k = torch.arange(size, device=device, dtype=torch.float64)
    angle = (2 * torch.pi / size) * torch.outer(k, k).remainder(size)  # remainder keeps the angles small
    return angle.cos().float(), angle.sin().float()


def _surface_dft(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """The phase-correlation surface by real matrix products (a DFT without complex numbers).

    The same surface as the FFT path to float rounding; it exists because ONNX export does not
    carry ``torch.fft``. It costs 18 matrix products of the pooled frame's sides (with them the
    exported 640x480 step takes 1.04x the time of the same model without the aligned head, measured
    side by side), so eager runs use the FFT.
    """
    height, width = cur.shape[-2:]
    ch, sh = _dft_matrices(height, cur.device)
    cw, sw = _dft_matrices(width, cur.device)

    def dft(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (Ch - i Sh) x (Cw - i Sw)^T; the matrices are symmetric, so no transposes
        a, b = ch @ x, sh @ x
        return a @ cw - b @ sw, -(a @ sw + b @ cw)

    re1, im1 = dft(cur)
    re2, im2 = dft(prev)
    cross_re, cross_im = re1 * re2 + im1 * im2, im1 * re2 - re1 * im2  # X1 * conj(X2)
    magnitude = torch.sqrt(cross_re * cross_re + cross_im * cross_im) + 1e-9
    cross_re, cross_im = cross_re / magnitude, cross_im / magnitude
    # the real part of the inverse: (Ch + i Sh) R (Cw + i Sw) / (h w)
    p, q = ch @ cross_re - sh @ cross_im, ch @ cross_im + sh @ cross_re
    return (p @ cw - q @ sw) / (height * width)


def _surface_fft(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    cross = torch.fft.rfft2(cur) * torch.fft.rfft2(prev).conj()
    return torch.fft.irfft2(cross / (cross.abs() + 1e-9), s=cur.shape[-2:])


def phase_shift(current: torch.Tensor, previous: torch.Tensor, method: str = 'auto') -> torch.Tensor:
    """The translation that moves ``previous`` onto ``current``, by phase correlation.

    Args:
        current, previous: (N, C, H, W) frames (any value range; C is averaged).
        method: 'fft' (torch.fft), 'dft' (real matrix products: what an ONNX graph carries) or
            'auto': 'dft' while the model is traced for export, else 'fft'.
    Returns:
        (N, 2) float shifts (dy, dx) in pixels of the input: ``current(y, x) ~ previous(y - dy, x - dx)``.
        Shifts are taken modulo the (pooled) frame size into [-size/2, size/2), so a move of half a
        frame or more is not found; the model sees the difference such a move leaves.
    """
    if method == 'auto':
        method = 'dft' if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() else 'fft'
    if method not in ('fft', 'dft'):
        raise ValueError(f"phase_shift method must be 'auto', 'fft' or 'dft', got {method!r}")
    with torch.no_grad():
        cur, prev = (F.avg_pool2d(v.float().mean(1, keepdim=True), ALIGN_POOL)[:, 0] for v in (current, previous))
        height, width = cur.shape[-2:]
        window = (torch.hann_window(height, periodic=False, device=cur.device)[:, None]
                  * torch.hann_window(width, periodic=False, device=cur.device)[None, :])
        cur = (cur - cur.mean((-2, -1), keepdim=True)) * window
        prev = (prev - prev.mean((-2, -1), keepdim=True)) * window
        surface = (_surface_dft if method == 'dft' else _surface_fft)(cur, prev)  # (N, h, w)
        surface = surface.flatten(1)
        flat = surface.argmax(1)
        py, px = flat // width, flat % width

        def at(dy: int, dx: int) -> torch.Tensor:
            idx = ((py + dy) % height) * width + (px + dx) % width
            return surface.gather(1, idx[:, None])[:, 0]

        def vertex(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
            # the peak of the parabola through three samples, within half a sample of the middle one
            denom = minus - 2 * centre + plus
            curved = denom.abs() > 1e-12
            off = 0.5 * (minus - plus) / torch.where(curved, denom, torch.ones_like(denom))
            return torch.where(curved, off, torch.zeros_like(off)).clamp(-0.5, 0.5)

        centre = at(0, 0)
        fy = py.float() + vertex(at(-1, 0), centre, at(1, 0))
        fx = px.float() + vertex(at(0, -1), centre, at(0, 1))
        fy = torch.where(fy >= height / 2, fy - height, fy)
        fx = torch.where(fx >= width / 2, fx - width, fx)
        return torch.stack([fy, fx], 1) * ALIGN_POOL


def translate(frames: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move frames by ``shift`` (bilinear): ``out(y, x) = frames(y - dy, x - dx)``.

    Args:
        frames: (N, C, H, W); shift: (N, 2) (dy, dx) in pixels, as from `phase_shift`.
    Returns:
        (N, C, H, W) moved frames, and (N, 1, H, W) a mask that is 1 where the moved frame has
        data and 0 where it came from outside the frame (there the moved frame holds zeros).
    """
    return warp(frames, shift[:, :, None, None])


def warp(frames: torch.Tensor, field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move frames by a shift per pixel (bilinear): ``out(y, x) = frames(y - dy(y, x), x - dx(y, x))``.

    Args:
        frames: (N, C, H, W); field: (N, 2, H, W) (dy, dx) in pixels, as from `shift_field`, or
            (N, 2, 1, 1) for one shift per frame (`translate`: the coordinates stay one row and one
            column until the sampling grid).
    Returns:
        (N, C, H, W) moved frames, and (N, 1, H, W) where they have data (0/1).
    """
    n, _, height, width = frames.shape
    src_y = torch.arange(height, device=frames.device, dtype=frames.dtype)[None, :, None] - field[:, 0].to(frames.dtype)
    src_x = torch.arange(width, device=frames.device, dtype=frames.dtype)[None, None, :] - field[:, 1].to(frames.dtype)
    # grid_sample's align_corners=True maps -1 and 1 to the centres of the first and last pixels
    gy = (2 * src_y / max(height - 1, 1) - 1).expand(n, height, width)
    gx = (2 * src_x / max(width - 1, 1) - 1).expand(n, height, width)
    grid = torch.stack([gx, gy], -1)
    moved = F.grid_sample(frames, grid, mode='bilinear', padding_mode='zeros', align_corners=True)
    inside = ((src_y >= 0) & (src_y <= height - 1)) & ((src_x >= 0) & (src_x <= width - 1))
    return moved, inside[:, None].to(frames.dtype)


def shift_field(current: torch.Tensor, previous: torch.Tensor, tiles: int) -> torch.Tensor:
    """A shift per pixel that moves ``previous`` onto ``current`` where one translation does not.

    A ``tiles`` x ``tiles`` grid of tiles, each half the frame's height and width, spread evenly
    from corner to corner (so neighbours overlap); one phase correlation per tile, and the tiles'
    shifts interpolated bilinearly over the frame, the corner tiles' at the frame's corners. A car
    or a person moving across a still scene, or a camera that turns or moves forward, leaves a
    different shift in each part of the frame (model card (50)).

    Args:
        current, previous: (N, C, H, W) frames; tiles: >= 2.
    Returns:
        (N, 2, H, W) float32 (dy, dx) in pixels, for `warp`.
    """
    if tiles < 2:
        raise ValueError(f'shift_field: tiles must be >= 2 (one translation: phase_shift), got {tiles}')
    height, width = int(current.shape[-2]), int(current.shape[-1])  # constants in a graph: one per frame size
    th, tw = max(16, height // 2), max(16, width // 2)
    rows = []
    for i in range(tiles):
        y0 = round(i * (height - th) / (tiles - 1))
        row = []
        for j in range(tiles):
            x0 = round(j * (width - tw) / (tiles - 1))
            row.append(phase_shift(current[..., y0:y0 + th, x0:x0 + tw], previous[..., y0:y0 + th, x0:x0 + tw]))
        rows.append(torch.stack(row, -1))                 # (N, 2, tiles)
    grid = torch.stack(rows, -2).float()                  # (N, 2, tiles, tiles)
    return F.interpolate(grid, size=(height, width), mode='bilinear', align_corners=True)


def _aligned(current: torch.Tensor, previous: torch.Tensor, valid: torch.Tensor,
             tiles: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``translate(previous) - current`` (float32) and where it holds data ((N, 1, H, W) 0/1);
    with ``tiles`` >= 2 the previous frame is moved by `shift_field` instead of one shift."""
    # in float32 whatever the model's dtype: grid_sample has no fp16 kernel on the CPU
    cur = current.float()
    if tiles:
        prev = previous.float()
        moved, inside = warp(prev, shift_field(cur, prev, tiles))
    else:
        moved, inside = translate(previous.float(), phase_shift(cur, previous))
    keep = inside * valid.float()[:, None, None, None]
    return (moved - cur) * keep, keep


def aligned_difference(current: torch.Tensor, previous: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The previous frame moved onto the current one, minus the current one; 0 where it has no data.

    Args:
        current, previous: (N, 3, H, W) frames.
        valid: (N,) bool, False where there is no previous frame (a stream's first frame).
    Returns:
        (N, 3, H, W) ``translate(previous) - current`` inside the moved frame, 0 outside it and
        for pairs that are not valid.
    """
    return _aligned(current, previous, valid)[0].to(current.dtype)


def agreed_difference(current: torch.Tensor, previous: list[torch.Tensor], valid: list[torch.Tensor],
                      tiles: int = 0) -> torch.Tensor:
    """The aligned differences of several earlier frames, kept only where they agree.

    The difference to one earlier frame holds this frame's rain, that frame's rain (with the
    opposite sign) and whatever scene the alignment did not undo. Rain falls somewhere else in each
    frame, so a change that every earlier frame shows with the same sign is this frame's; at each
    pixel and channel the value is the one of smallest magnitude when all differences with data
    there share its sign, else 0 (one frame's rain or an unaligned edge disagrees with the rest).
    Where only one earlier frame has data, its difference is used as it is.

    Args:
        current: (N, 3, H, W) frames.
        previous: earlier frames, nearest first, each (N, 3, H, W).
        valid: for each earlier frame, (N,) bool: False where it does not exist.
        tiles: 0: one translation per earlier frame; >= 2: a shift per pixel (`shift_field`).
    Returns:
        (N, 3, H, W) in ``current``'s dtype; ``aligned_difference`` for one earlier frame.
    """
    if len(previous) != len(valid) or not previous:
        raise ValueError(f'agreed_difference: {len(previous)} earlier frames and {len(valid)} validity flags; '
                         'expected the same number, at least one')
    agreed, have = _aligned(current, previous[0], valid[0], tiles)
    for frame, ok in zip(previous[1:], valid[1:]):
        diff, there = _aligned(current, frame, ok, tiles)
        both, same = (have * there) > 0, agreed * diff > 0
        smaller = torch.where(diff.abs() < agreed.abs(), diff, agreed)
        agreed = torch.where(both, torch.where(same, smaller, torch.zeros_like(diff)), agreed + diff)
        have = torch.maximum(have, there)
    return agreed.to(current.dtype)


def thin_brightening(diff: torch.Tensor, width: int) -> torch.Tensor:
    """The parts of an aligned difference where the current frame is brighter in thin, steep lines.

    ``diff`` is (earlier frame moved onto the current one) minus the current one, so a bright
    streak of the current frame is negative there, an earlier frame's streak positive, and what
    one translation does not align (an object moving on its own, the scene of a camera moving
    forward) leaves both signs over areas as wide as the motion. A white top-hat across rows
    (the brightening minus its opening by ``width`` pixels in a row) keeps only what is narrower
    than ``width`` across: a streak falling within about 60 degrees of vertical, not an object's
    band. Earlier frames' rain and every darkening are dropped.

    Args:
        diff: (N, C, H, W) aligned difference, as from `agreed_difference`.
        width: odd >= 3, the widest structure kept is ``width - 1`` pixels across.
    Returns:
        (N, C, H, W) <= 0, in ``diff``'s dtype.
    """
    if width < 3 or width % 2 == 0:
        raise ValueError(f'thin_brightening: width must be odd and >= 3, got {width}')
    bright = torch.relu(-diff)
    kernel, pad = (1, width), (0, width // 2)
    opened = F.max_pool2d(-F.max_pool2d(-bright, kernel, 1, pad), kernel, 1, pad)  # erosion, then dilation
    return opened - bright


# A limit that never binds (a change of at most 1 in [0, 1] frames); finite, so the graph exports.
_NO_LIMIT = 1e4
# An earlier frame whose mean absolute difference to the current one (aligned) is below this many
# grey levels is a repeat of it (a driver that republishes a frame, a frame-rate conversion), which
# tells nothing about what is new: the novelty clamp skips it (real_rain_yard repeats every other
# frame: 0.00-0.06 grey levels).
REPEAT_LEVEL = 0.2


def novelty_clamp(current: torch.Tensor, output: torch.Tensor, previous: list[torch.Tensor],
                  valid: list[torch.Tensor], full: float, fade: float) -> torch.Tensor:
    """Limit a quiet frame's change to what is new in it against earlier frames aligned onto it.

    Rain falls somewhere else in every frame; a scene's thin bright line (a pole, a window's
    mullion) was in the earlier frames too. So at each pixel the output may be darker than the input
    by at most how much brighter the input is than every earlier frame moved onto it (phase
    correlation), and brighter by at most how much darker it is; where no earlier frame has data
    the change is kept, and an earlier frame that repeats the current one (mean absolute difference
    below ``REPEAT_LEVEL`` grey levels) counts as none. Dense rain falls on the same aligned pixel
    in consecutive frames often enough that the limit would keep real streaks, so it applies only
    to quiet frames: in full where the frame's mean absolute change is at most ``full`` grey levels
    (of 255), fading out linearly over the next ``fade`` grey levels (model card (49)).

    Args:
        current: (N, 3, H, W) input frames in [0, 1]; output: (N, 3, H, W) the model's output.
        previous: earlier input frames, nearest first, each (N, 3, H, W).
        valid: for each earlier frame, (N,) bool: False where it does not exist.
        full, fade: grey levels, full > 0, fade >= 0.
    Returns:
        (N, 3, H, W) in ``output``'s dtype.
    """
    if len(previous) != len(valid) or not previous:
        raise ValueError(f'novelty_clamp: {len(previous)} earlier frames and {len(valid)} validity flags; '
                         'expected the same number, at least one')
    change = output.float() - current.float()
    quiet = change.abs().mean((1, 2, 3)) * 255.0
    if fade > 0:
        weight = ((full + fade - quiet) / fade).clamp(0.0, 1.0)
    else:
        weight = (quiet <= full).float()
    brighter = darker = have = None
    for frame, ok in zip(previous, valid):
        diff, there = _aligned(current, frame, ok)  # earlier minus current
        # mean absolute difference over where the moved frame has data (3 channels)
        level = (diff.abs() * there).flatten(1).sum(1) / (3 * there.flatten(1).sum(1)).clamp(min=1.0)
        moved = level > REPEAT_LEVEL / 255.0
        there = there * moved[:, None, None, None].to(there.dtype)
        free = torch.full_like(diff, _NO_LIMIT)
        up = torch.where(there > 0, torch.relu(-diff), free)
        down = torch.where(there > 0, torch.relu(diff), free)
        brighter = up if brighter is None else torch.minimum(brighter, up)
        darker = down if darker is None else torch.minimum(darker, down)
        have = there if have is None else torch.maximum(have, there)
    limited = torch.where(have > 0, torch.maximum(torch.minimum(change, darker), -brighter), change)
    out = current.float() + change + weight[:, None, None, None] * (limited - change)
    return out.to(output.dtype)
