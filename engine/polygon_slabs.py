"""Point-in-polygon tests for many points: the crossing test, and slabs that spare most points it.

:func:`in_polygon` is the even-odd crossing test of ``(x, y)`` against ``poly (K, 2)``:
``(y_i > y) != (y_j > y) and x < x_i + (y − y_i) · (x_j − x_i) / (y_j − y_i)`` over the
edges ``(i, j = i − 1)``, in float64; a point exactly on an edge may fall on either side.

A :func:`slab_table` cuts the polygon's x range into ``n`` slabs of equal width. In each
slab the boundary of the polygon lies within a few *bands* (the y range each edge covers
across the slab, widened by ``margin``, overlapping ones merged); between two bands the slab
holds no boundary, so that *gap* lies wholly inside or wholly outside, which one test of its
middle decides once. :func:`in_polygon_slabs` then gives a point in a gap its gap's answer
and runs the crossing test only for points in a band: a few comparisons per point instead
of K edges with a division each.

Exactness: the answer is the crossing test's own, bit for bit. A point in a gap is at least
``margin`` (in y, slab and its margin included) from every edge crossing its slab, so every
edge that crosses the point's horizontal line does so at least ``margin`` away in x; the
crossing test's rounding (a few ulps of the coordinates) cannot flip a comparison that far
off, so it evaluates to the exact even-odd answer, which the whole gap shares. ``margin``
must exceed those ulps and the distance by which a point may stray from its slab (callers
use ``1e-7 · (1 + max |coordinate|)``).
"""

from __future__ import annotations

import numpy as np

from engine._jit import inline, jit


@inline
def in_polygon(x, y, poly):
    """Even-odd crossing test of ``(x, y)`` against ``poly (K, 2)``."""
    inside = False
    k = poly.shape[0]
    j = k - 1
    for i in range(k):
        xi, yi, xj, yj = poly[i, 0], poly[i, 1], poly[j, 0], poly[j, 1]
        if (yi > y) != (yj > y):
            if x < xi + (y - yi) * (xj - xi) / (yj - yi):
                inside = not inside
        j = i
    return inside


@inline
def _slab_bands(poly, xa, xb, margin, bands):
    """The bands of the slab ``xa <= x <= xb`` (merged, ascending): ``bands[:n]``, returns n."""
    n = 0
    for e in range(poly.shape[0]):
        x1, y1, x2, y2 = poly[e, 0], poly[e, 1], poly[e - 1, 0], poly[e - 1, 1]
        if max(x1, x2) < xa or min(x1, x2) > xb:
            continue
        if x1 == x2:
            ya, yb = y1, y2
        else:  # the edge's y where it enters and leaves the slab
            ya = y1 + (max(xa, min(x1, x2)) - x1) * (y2 - y1) / (x2 - x1)
            yb = y1 + (min(xb, max(x1, x2)) - x1) * (y2 - y1) / (x2 - x1)
        lo_y, hi_y = min(ya, yb) - margin, max(ya, yb) + margin
        j = n  # insertion by lower end
        while j > 0 and bands[j - 1, 0] > lo_y:
            bands[j] = bands[j - 1]
            j -= 1
        bands[j, 0], bands[j, 1] = lo_y, hi_y
        n += 1
    m = 0
    for j in range(n):
        if m > 0 and bands[j, 0] <= bands[m - 1, 1]:
            bands[m - 1, 1] = max(bands[m - 1, 1], bands[j, 1])
        else:
            bands[m] = bands[j]
            m += 1
    return m


@jit
def slab_table(poly, x0, width, n, margin):
    """Slabs ``s < n`` of ``poly (K, 2)``, slab s spanning ``x0 + s · width .. x0 + (s + 1) ·
    width`` (widened by ``margin``): ``(bands (B, 2), first (n + 1,), gap_in (B,))``, slab s's
    bands ``bands[first[s]:first[s + 1]]`` ascending in y, ``gap_in[b]`` whether the gap just
    below band b lies inside the polygon (the gaps below the first band and above the last
    lie outside)."""
    k = poly.shape[0]
    bands = np.empty((n * k, 2))
    gap_in = np.zeros(n * k, np.bool_)
    first = np.empty(n + 1, np.int64)
    scratch = np.empty((k, 2))
    m = 0
    for s in range(n):
        xa = x0 + s * width
        nb = _slab_bands(poly, xa - margin, xa + width + margin, margin, scratch)
        first[s] = m
        for b in range(nb):
            bands[m] = scratch[b]
            gap_in[m] = b > 0 and in_polygon(xa + 0.5 * width, 0.5 * (scratch[b - 1, 1] + scratch[b, 0]), poly)
            m += 1
    first[n] = m
    return bands[:m], first, gap_in[:m]


@inline
def in_polygon_slabs(x, y, poly, lo, hi, x0, inv_width, bands, first, gap_in):
    """:func:`in_polygon` of ``(x, y)`` within the bounding box ``lo..hi`` (False outside
    it), by the :func:`slab_table` ``bands, first, gap_in`` of slabs ``1 / inv_width`` wide from ``x0``."""
    if not (x >= lo[0] and x <= hi[0] and y >= lo[1] and y <= hi[1]):
        return False
    s = min(max(int(np.floor((x - x0) * inv_width)), 0), first.shape[0] - 2)
    for b in range(first[s], first[s + 1]):
        if y < bands[b, 0]:
            return gap_in[b]
        if y <= bands[b, 1]:
            return in_polygon(x, y, poly)
    return False


def polygon_slabs(poly: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int
                  ) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray]:
    """``(x0, inv_width, bands, first, gap_in)``: the :func:`slab_table` of ``n`` slabs
    across the bounding box ``lo..hi`` of ``poly (K, 2)`` (float64), as
    :func:`in_polygon_slabs` takes it."""
    width = float(hi[0] - lo[0]) / n if hi[0] > lo[0] else 1.0
    margin = 1e-7 * (1.0 + float(np.abs(poly).max()))
    return (float(lo[0]), 1.0 / width, *slab_table(poly, float(lo[0]), width, int(n), margin))
