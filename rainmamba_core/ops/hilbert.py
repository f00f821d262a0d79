"""Generalized Hilbert ("gilbert") scan orders for grids of any size, in 2D and 3D.

The generalized Hilbert curve (J. Červený, https://github.com/jakubcerveny/gilbert) fills a
rectangle / cuboid of arbitrary side lengths by recursively cutting it into sub-boxes, each
traversed from one corner to an adjacent one, choosing even cut lengths wherever possible. This
module is our own implementation of that algorithm: a box is an origin plus axis vectors, children
are produced by `_children_2d` / `_children_3d`, traversal uses an explicit stack (no Python
recursion limit), and the final straight runs are written with numpy in one go.

Index conventions (the part callers depend on):

* `gilbert2d(h, w)` -> (h*w,) LongTensor. Entry s is the row-major flat index `y*w + x` of the
  s-th cell visited, for a grid of h rows (y) and w columns (x). The curve starts at (y=0, x=0).
  Its major axis is the longer side (columns when w >= h).
* `gilbert3d(h, w, t)` -> (h*w*t,) LongTensor. Entry s is `i*w*t + j*t + k` for the s-th cell
  (i, j, k) of an (H, W, T) grid, T fastest. This is exactly the RainMamba authors' order: they
  enumerate `Hilbert3d(width=H, height=W, depth=T)` (first coordinate spans H) and flatten with
  `c0*W*T + c1*T + c2`.

Step guarantees (checked by test/test_ops_hilbert.py):

* 2D: consecutive cells differ by at most 1 in each coordinate (Chebyshev distance 1); at most one
  step is diagonal, and none when the longer side has even length (ties: w counts as the longer).
* 3D: only "even sizes are recommended"; with odd sides the curve still visits every cell once,
  but some steps may jump by 2 (L1), as in the authors' T=5 and T=7 curves.

Results are cached per shape (`functools.lru_cache`) and returned as clones, so a caller that
writes into its tensor cannot corrupt the cache.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from rainmamba_core.errors import RainMambaError

__all__ = ['HilbertError', 'gilbert2d', 'gilbert3d', 'gilbert2d_coords', 'gilbert3d_coords']


class HilbertError(RainMambaError, ValueError):
    """A requested curve has an invalid size."""


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise HilbertError(f'{name}={value!r}: curve sizes must be positive integers; '
                               f'pass the grid size in cells (e.g. the feature map height).')


def _unit(v: tuple[int, ...]) -> tuple[int, ...]:
    return tuple((c > 0) - (c < 0) for c in v)


def _length(v: tuple[int, ...]) -> int:
    # Axis vectors are always axis-aligned (one non-zero component), so |sum| is their length.
    return abs(sum(v))


def _add(*vs: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sum(c) for c in zip(*vs))


def _neg(v: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-c for c in v)


def _half(v: tuple[int, ...], full_length: int) -> tuple[int, ...]:
    """Floor-halve an axis vector, then lengthen by one cell if that half is odd.

    Floor division (not truncation) matters for negative axes: it rounds the half *up* in
    length, which is part of the curve's definition and of the authors' precomputed orders.
    An even half keeps the sub-boxes on either side of the cut fillable without diagonal steps.
    """
    half = tuple(c // 2 for c in v)
    if _length(half) % 2 and full_length > 2:
        half = _add(half, _unit(v))
    return half


Box2 = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
Box3 = tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]


def _children_2d(box: Box2) -> list[Box2]:
    """Split a 2D box (origin p, major axis a, minor axis b) into the boxes visited in order.

    The curve of a box enters at p and leaves at the far end of a (same side as p along b).
    """
    p, a, b = box
    w, h = _length(a), _length(b)
    ua, ub = _unit(a), _unit(b)
    a2 = tuple(c // 2 for c in a)
    if 2 * w > 3 * h:
        # Long and thin: two boxes side by side along the major axis.
        a2 = _half(a, w)
        return [(p, a2, b), (_add(p, a2), _add(a, _neg(a2)), b)]
    b2 = _half(b, h)
    rest_a = _add(a, _neg(a2))
    # Up along b into the near half, across the far half, back down along -b.
    return [
        (p, b2, a2),
        (_add(p, b2), a, _add(b, _neg(b2))),
        (_add(p, a, _neg(ua), b2, _neg(ub)), _neg(b2), _neg(rest_a)),
    ]


def _children_3d(box: Box3) -> list[Box3]:
    """Split a 3D box (origin p, axes a, b, c; a is the major/exit axis) into ordered sub-boxes."""
    p, a, b, c = box
    w, h, d = _length(a), _length(b), _length(c)
    ua, ub, uc = _unit(a), _unit(b), _unit(c)
    a2, b2, c2 = _half(a, w), _half(b, h), _half(c, d)
    rest_a, rest_b, rest_c = _add(a, _neg(a2)), _add(b, _neg(b2)), _add(c, _neg(c2))
    far_a = _add(a, _neg(ua))  # offset of the last cell along a
    if 2 * w > 3 * h and 2 * w > 3 * d:
        # Much longer along a than both others: two boxes along a.
        return [(p, a2, b, c), (_add(p, a2), rest_a, b, c)]
    if 3 * h > 4 * d:
        # Flat in c: do not cut c; a 2D-like up/across/down pattern in the (a, b) plane.
        return [
            (p, b2, c, a2),
            (_add(p, b2), a, rest_b, c),
            (_add(p, far_a, b2, _neg(ub)), _neg(b2), c, _neg(rest_a)),
        ]
    if 3 * d > 4 * h:
        # Flat in b: the same pattern in the (a, c) plane.
        return [
            (p, c2, a2, b),
            (_add(p, c2), a, b, rest_c),
            (_add(p, far_a, c2, _neg(uc)), _neg(c2), _neg(rest_a), b),
        ]
    # Regular case: cut all three axes into eight octant-like boxes visited as five runs.
    far_c = _add(c, _neg(uc))
    return [
        (p, b2, c2, a2),
        (_add(p, b2), c, a2, rest_b),
        (_add(p, b2, _neg(ub), far_c), a, _neg(b2), _neg(rest_c)),
        (_add(p, far_a, b2, far_c), _neg(c), _neg(rest_a), rest_b),
        (_add(p, far_a, b2, _neg(ub)), _neg(b2), c2, _neg(rest_a)),
    ]


def _walk(root: tuple, children, ndim: int, total: int) -> np.ndarray:
    """Depth-first traversal of the box tree down to straight runs, expanded with numpy at once.

    Returns:
        (total, ndim) int64 coordinates in visiting order.
    """
    starts: list[tuple[int, ...]] = []
    units: list[tuple[int, ...]] = []
    counts: list[int] = []
    stack = [root]
    while stack:
        box = stack.pop()
        p, axes = box[0], box[1:]
        lengths = [_length(v) for v in axes]
        if 0 in lengths:
            # Odd splits of flat boxes can leave an empty sub-box: it covers no cells.
            continue
        long_axes = [i for i, n in enumerate(lengths) if n > 1]
        if len(long_axes) <= 1:
            # A single row/column (or one cell): a straight run along the only long axis.
            i = long_axes[0] if long_axes else 0
            starts.append(p)
            units.append(_unit(axes[i]))
            counts.append(lengths[i])
            continue
        # Reverse so the first child is popped (visited) first.
        stack.extend(reversed(children(box)))
    n_runs = np.asarray(counts, dtype=np.int64)
    if int(n_runs.sum()) != total:  # pragma: no cover - would mean a bug in the splitting rules
        raise HilbertError(f'curve produced {int(n_runs.sum())} cells, expected {total}')
    run_of_cell = np.repeat(np.arange(len(counts)), n_runs)
    step_in_run = np.arange(total) - np.repeat(np.cumsum(n_runs) - n_runs, n_runs)
    return (np.asarray(starts, dtype=np.int64).reshape(-1, ndim)[run_of_cell]
            + step_in_run[:, None] * np.asarray(units, dtype=np.int64).reshape(-1, ndim)[run_of_cell])


@functools.lru_cache(maxsize=128)
def _gilbert2d_xy(w: int, h: int) -> np.ndarray:
    if w >= h:
        root = ((0, 0), (w, 0), (0, h))
    else:
        root = ((0, 0), (0, h), (w, 0))
    xy = _walk(root, _children_2d, 2, w * h)
    xy.setflags(write=False)
    return xy


@functools.lru_cache(maxsize=128)
def _gilbert3d_xyz(sx: int, sy: int, sz: int) -> np.ndarray:
    # The longest side becomes the major axis a (ties resolved x, then y, then z).
    if sx >= sy and sx >= sz:
        root = ((0, 0, 0), (sx, 0, 0), (0, sy, 0), (0, 0, sz))
    elif sy >= sx and sy >= sz:
        root = ((0, 0, 0), (0, sy, 0), (sx, 0, 0), (0, 0, sz))
    else:
        root = ((0, 0, 0), (0, 0, sz), (sx, 0, 0), (0, sy, 0))
    xyz = _walk(root, _children_3d, 3, sx * sy * sz)
    xyz.setflags(write=False)
    return xyz


def gilbert2d_coords(h: int, w: int) -> np.ndarray:
    """Visiting order of a 2D generalized Hilbert curve as (y, x) pairs.

    Args:
        h: grid rows; w: grid columns.

    Returns:
        (h*w, 2) int64 array of (y, x), read-only (shared cache).
    """
    _check_sizes(h=h, w=w)
    return _gilbert2d_xy(int(w), int(h))[:, ::-1]


def gilbert3d_coords(h: int, w: int, t: int) -> np.ndarray:
    """Visiting order of the 3D generalized Hilbert curve as (i, j, k) over an (H, W, T) grid.

    Returns:
        (h*w*t, 3) int64 array, read-only (shared cache).
    """
    _check_sizes(h=h, w=w, t=t)
    return _gilbert3d_xyz(int(h), int(w), int(t))


@functools.lru_cache(maxsize=128)
def _gilbert2d_flat(h: int, w: int) -> torch.Tensor:
    yx = gilbert2d_coords(h, w)
    return torch.from_numpy(yx[:, 0] * w + yx[:, 1])


@functools.lru_cache(maxsize=128)
def _gilbert3d_flat(h: int, w: int, t: int) -> torch.Tensor:
    ijk = gilbert3d_coords(h, w, t)
    return torch.from_numpy(ijk[:, 0] * (w * t) + ijk[:, 1] * t + ijk[:, 2])


def gilbert2d(h: int, w: int) -> torch.Tensor:
    """2D generalized Hilbert scan order over an h x w grid.

    Args:
        h: rows; w: columns (any positive sizes).

    Returns:
        (h*w,) LongTensor: entry s is the row-major index `y*w + x` of the s-th visited cell,
        a permutation of range(h*w). Use as `tokens[:, order]` on raster-ordered (B, h*w, C).
        A fresh clone of the cached curve.
    """
    _check_sizes(h=h, w=w)
    return _gilbert2d_flat(int(h), int(w)).clone()


def gilbert3d(h: int, w: int, t: int) -> torch.Tensor:
    """3D generalized Hilbert scan order over an (H, W, T) grid, T fastest (the authors' format).

    Args:
        h, w: spatial grid size; t: number of frames.

    Returns:
        (h*w*t,) LongTensor: entry s is `i*w*t + j*t + k` for the s-th visited cell (i, j, k);
        identical to the RainMamba authors' `hilbert_curve_*_scale.pt` for their shapes.
        A fresh clone of the cached curve.
    """
    _check_sizes(h=h, w=w, t=t)
    return _gilbert3d_flat(int(h), int(w), int(t)).clone()


# ------------------------------------------------------------------ scan orders of the model's token grids
@functools.lru_cache(maxsize=64)
def hilbert3d_raster_order(height: int, width: int, frames: int) -> torch.Tensor:
    """Raster (T, H, W) index of each position of the 3D curve over (H, W, T), T fastest."""
    return authors_curve_to_raster(gilbert3d(height, width, frames), height, width, frames)


def authors_curve_to_raster(curve: torch.Tensor, height: int, width: int, frames: int) -> torch.Tensor:
    """Convert a curve in the authors' format (flat index i*W*T + j*T + k over (H, W, T))
    into raster (T, H, W) token indices k*H*W + i*W + j."""
    curve = curve.long().cpu()
    if curve.numel() != height * width * frames:
        raise ValueError(f'Hilbert curve has {curve.numel()} entries; the feature grid {height}x{width}x{frames} '
                         f'needs {height * width * frames}')
    i, rem = curve // (width * frames), curve % (width * frames)
    j, k = rem // frames, rem % frames
    return k * height * width + i * width + j


@functools.lru_cache(maxsize=64)
def hilbert2d_order(height: int, width: int) -> torch.Tensor:
    return gilbert2d(height, width).long()


_INVERSES: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def inverse_order(order: torch.Tensor) -> torch.Tensor:
    """argsort of a permutation (gathering with it undoes a gather with `order`), cached for the
    orders of `RainMamba._orders` (which are cached themselves, so the same tensor object comes back)."""
    hit = _INVERSES.get(id(order))
    if hit is None or hit[0] is not order:
        if len(_INVERSES) > 64:
            _INVERSES.clear()
        hit = _INVERSES[id(order)] = (order, torch.argsort(order))
    return hit[1]
