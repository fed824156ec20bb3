"""The numba kernels of :mod:`engine.propagate`: the crop of a frame's points (moved to the
frame time) to a box, the model's voxel filter, grid and normals, the 4-DOF point-to-plane ICP
and the initial offset search. Inputs are validated by the caller.

Local coordinates are a box's yaw-only frame: ``q = Rz(−yaw) (p − center)``. A model grid
(``lo (3,)``, ``cell`` m, ``dims (3,)``) lists the model points per cell (``start``, ``items``:
counting sort, z fastest, so a column's run of cells is one range of ``items``); a query looks
at the cells within its search distance only, skipping columns that cannot hold a nearer point.
"""

from __future__ import annotations

import math

import numpy as np

from engine._jit import inline, jit


@inline
def _local_xy(dx, dy, c, s):
    """Local x, y of a world offset ``(dx, dy)`` from a box centre: ``Rz(−yaw)`` with
    ``c, s`` the cosine and sine of the yaw."""
    return c * dx + s * dy, -s * dx + c * dy


@jit
def object_points(xyz, offsets, velocity, center, yaw, half, z_lo):
    """``(M, 3) float64`` world points of ``xyz (N, 3)`` moved to the frame time,
    ``p − velocity · offsets · 1e-9`` (``offsets (N,) int64`` ns, or empty: all at the frame
    time), that lie in the box ``(center, yaw)``: local ``|x| <= half[0]``, ``|y| <= half[1]``,
    ``z_lo <= z <= half[2]``."""
    c = math.cos(yaw)
    s = math.sin(yaw)
    out = np.empty((xyz.shape[0], 3))
    m = 0
    for i in range(xyz.shape[0]):
        o = offsets[i] * 1e-9 if offsets.shape[0] else 0.0
        px = np.float64(xyz[i, 0]) - o * velocity[0]
        py = np.float64(xyz[i, 1]) - o * velocity[1]
        pz = np.float64(xyz[i, 2]) - o * velocity[2]
        dx = px - center[0]
        dy = py - center[1]
        dz = pz - center[2]
        lx, ly = _local_xy(dx, dy, c, s)
        if abs(lx) <= half[0] and abs(ly) <= half[1] and z_lo <= dz <= half[2]:
            out[m, 0] = px
            out[m, 1] = py
            out[m, 2] = pz
            m += 1
    return out[:m]


@jit
def local_in_box(p, center, yaw, half):
    """``(M, 3)`` local coordinates in the box frame ``(center, yaw)`` of the world points
    ``p (N, 3)`` with ``|local| <= half`` on every axis."""
    c = math.cos(yaw)
    s = math.sin(yaw)
    out = np.empty((p.shape[0], 3))
    m = 0
    for i in range(p.shape[0]):
        dx = p[i, 0] - center[0]
        dy = p[i, 1] - center[1]
        lx, ly = _local_xy(dx, dy, c, s)
        lz = p[i, 2] - center[2]
        if abs(lx) <= half[0] and abs(ly) <= half[1] and abs(lz) <= half[2]:
            out[m, 0] = lx
            out[m, 1] = ly
            out[m, 2] = lz
            m += 1
    return out[:m]


@jit
def add_voxels(local, lo, voxel, vdims, occupied, pts, n):
    """Append to ``pts[n:]`` (room for ``len(local)`` more) the first point of ``local (K, 3)``
    in each voxel (``lo``, ``voxel`` m, ``vdims``) not yet ``occupied``, in voxel order, marking
    them occupied. Returns the new count."""
    key = np.empty(local.shape[0], np.int64)
    row = np.empty(local.shape[0], np.int64)
    k = 0
    for i in range(local.shape[0]):
        vx = int(math.floor((local[i, 0] - lo[0]) / voxel))
        vy = int(math.floor((local[i, 1] - lo[1]) / voxel))
        vz = int(math.floor((local[i, 2] - lo[2]) / voxel))
        if 0 <= vx < vdims[0] and 0 <= vy < vdims[1] and 0 <= vz < vdims[2]:
            key[k] = (vx * vdims[1] + vy) * vdims[2] + vz
            row[k] = i
            k += 1
    order = np.argsort(key[:k], kind="mergesort")
    for e in range(k):
        v = key[order[e]]
        if not occupied[v]:
            occupied[v] = True
            pts[n] = local[row[order[e]]]
            n += 1
    return n


@inline
def _cell(x, lo, cell, n):
    return min(max(int(math.floor((x - lo) / cell)), 0), n - 1)


@jit
def build_grid(pts, lo, cell, dims):
    """``(start (C+1,), items (K,))``: the points ``pts (K, 3)`` of each grid cell (clamped)."""
    nc = dims[0] * dims[1] * dims[2]
    key = np.empty(pts.shape[0], np.int64)
    start = np.zeros(nc + 1, np.int64)
    for i in range(pts.shape[0]):
        k = (_cell(pts[i, 0], lo[0], cell, dims[0]) * dims[1] + _cell(pts[i, 1], lo[1], cell, dims[1])) * dims[2] \
            + _cell(pts[i, 2], lo[2], cell, dims[2])
        key[i] = k
        start[k + 1] += 1
    for k in range(nc):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    items = np.empty(pts.shape[0], np.int64)
    for i in range(pts.shape[0]):
        items[fill[key[i]]] = i
        fill[key[i]] += 1
    return start, items


@inline
def _gap(q, lo, cell, i, n):
    """A lower bound on the distance along one axis from ``q`` to the points of grid cell ``i``
    of ``n`` (the end cells reach out without bound: points beyond the grid are clamped into them)."""
    a = lo + i * cell
    if q < a and i > 0:
        return max(a - q - 1e-9, 0.0)
    if q > a + cell and i < n - 1:
        return max(q - a - cell - 1e-9, 0.0)
    return 0.0


@inline
def _nearest(qx, qy, qz, mp, lo, cell, dims, start, items, dmax):
    """Index of the nearest model point within ``dmax`` of q (−1: none) and its squared
    distance: the cells within ``ceil(dmax / cell)`` of q's, a run of z cells per column, q's
    own column first and then those that may still hold a nearer point."""
    reach = int(math.ceil(dmax / cell))
    fx = int(math.floor((qx - lo[0]) / cell))
    fy = int(math.floor((qy - lo[1]) / cell))
    fz = int(math.floor((qz - lo[2]) / cell))
    z0 = max(fz - reach, 0)
    z1 = min(fz + reach + 1, dims[2])
    x0 = max(fx - reach, 0)
    x1 = min(fx + reach + 1, dims[0])
    y0 = max(fy - reach, 0)
    y1 = min(fy + reach + 1, dims[1])
    best = -1
    best_d2 = dmax * dmax
    if z0 >= z1 or x0 >= x1 or y0 >= y1:
        return best, best_d2
    cx = min(max(fx, x0), x1 - 1)
    cy = min(max(fy, y0), y1 - 1)
    for c in range(-1, (x1 - x0) * (y1 - y0)):
        if c < 0:
            ix, iy = cx, cy
        else:
            ix = x0 + c // (y1 - y0)
            iy = y0 + c % (y1 - y0)
            if ix == cx and iy == cy:
                continue
            gx = _gap(qx, lo[0], cell, ix, dims[0])
            gy = _gap(qy, lo[1], cell, iy, dims[1])
            if gx * gx + gy * gy > best_d2:
                continue
        k = (ix * dims[1] + iy) * dims[2]
        for e in range(start[k + z0], start[k + z1]):
            j = items[e]
            d2 = (qx - mp[j, 0]) ** 2 + (qy - mp[j, 1]) ** 2 + (qz - mp[j, 2]) ** 2
            if d2 <= best_d2:
                best_d2 = d2
                best = j
    return best, best_d2


@inline
def _face_normal(p, half, tol, out):
    """The outward normal of the box face (half extents ``half``) within ``tol`` of local
    point ``p`` when exactly one is (never the bottom, where the ground is cut away); zero
    (no normal) near an edge or away from every face."""
    best = -1
    for a in range(3):
        if a == 2 and p[2] < 0.0:
            continue
        if abs(half[a] - abs(p[a])) <= tol:
            if best >= 0:
                best = -2
            elif best == -1:
                best = a
    for a in range(3):
        out[a] = 0.0
    if best >= 0:
        out[best] = 1.0 if p[best] >= 0.0 else -1.0


@jit
def normals(pts, rows, lo, cell, dims, start, items, radius, half, tol, out):
    """Unit normals ``out[rows]`` of the local points ``pts[rows]``: the PCA of their
    neighbours in ``pts`` within ``radius`` where that is a surface (at least 5 neighbours;
    middle eigenvalue at least 5 % of the largest: no line; smallest at most 5 % of the middle:
    no corner or blob), otherwise (sparse scans) :func:`_face_normal` of the box of half
    extents ``half`` (or zero: no normal)."""
    reach = int(math.ceil(radius / cell))
    cov = np.empty((3, 3))
    for i in rows:
        px, py, pz = pts[i, 0], pts[i, 1], pts[i, 2]
        fx = _cell(px, lo[0], cell, dims[0])
        fy = _cell(py, lo[1], cell, dims[1])
        fz = _cell(pz, lo[2], cell, dims[2])
        n = 0
        sx = sy = sz = sxx = sxy = sxz = syy = syz = szz = 0.0
        z0 = max(fz - reach, 0)
        z1 = min(fz + reach + 1, dims[2])
        for ix in range(max(fx - reach, 0), min(fx + reach + 1, dims[0])):
            gx = _gap(px, lo[0], cell, ix, dims[0])
            for iy in range(max(fy - reach, 0), min(fy + reach + 1, dims[1])):
                gy = _gap(py, lo[1], cell, iy, dims[1])
                if gx * gx + gy * gy > radius * radius:
                    continue
                k = (ix * dims[1] + iy) * dims[2]
                for e in range(start[k + z0], start[k + z1]):
                    j = items[e]
                    dx = pts[j, 0] - px
                    dy = pts[j, 1] - py
                    dz = pts[j, 2] - pz
                    if dx * dx + dy * dy + dz * dz <= radius * radius:
                        n += 1
                        sx += dx
                        sy += dy
                        sz += dz
                        sxx += dx * dx
                        sxy += dx * dy
                        sxz += dx * dz
                        syy += dy * dy
                        syz += dy * dz
                        szz += dz * dz
        _face_normal(pts[i], half, tol, out[i])
        if n < 5:
            continue
        mx, my, mz = sx / n, sy / n, sz / n
        cov[0, 0] = sxx / n - mx * mx
        cov[0, 1] = cov[1, 0] = sxy / n - mx * my
        cov[0, 2] = cov[2, 0] = sxz / n - mx * mz
        cov[1, 1] = syy / n - my * my
        cov[1, 2] = cov[2, 1] = syz / n - my * mz
        cov[2, 2] = szz / n - mz * mz
        w, v = np.linalg.eigh(cov)
        if w[1] >= 0.05 * w[2] and w[0] <= 0.05 * w[1]:
            out[i, 0] = v[0, 0]
            out[i, 1] = v[1, 0]
            out[i, 2] = v[2, 0]


@jit
def icp(tp, pose, prior, prior_m, prior_z_m, prior_rad, mp, mn, lo, cell, dims, start, items, dmax, max_iter, huber):
    """Point-to-plane ICP of world points ``tp (T, 3)`` onto the model: ``pose`` ``[cx, cy, cz,
    yaw]`` refined in place (Gauss-Newton, Huber weights, ``prior`` a Gaussian prior of σ
    ``prior_m`` (x, y), ``prior_z_m`` and ``prior_rad``). Correspondences within ``2 dmax``
    for the first two iterations, then ``dmax``. Returns ``(fitness, rmse, along)`` at the final pose: the
    fraction of points with a model point within ``dmax``, the RMS point-to-plane distance of
    those (model points without a normal, zero in ``mn``, count for the fitness only), and
    how well they pin the position along the heading (the sum of their normals' squared
    local x components: points on a front or back face count 1, on a side 0)."""
    inv_r2 = 1.0 / (huber * huber)
    for it in range(max_iter):
        d_lim = 2.0 * dmax if it < 2 else dmax
        h = np.zeros((4, 4))
        g = np.zeros(4)
        for k in range(4):
            sigma = prior_m if k < 2 else prior_z_m if k == 2 else prior_rad
            h[k, k] = 1.0 / (sigma * sigma)
            g[k] = (pose[k] - prior[k]) / (sigma * sigma)
        c = math.cos(pose[3])
        s = math.sin(pose[3])
        jac = np.empty(4)
        for i in range(tp.shape[0]):
            dx = tp[i, 0] - pose[0]
            dy = tp[i, 1] - pose[1]
            qx, qy = _local_xy(dx, dy, c, s)
            qz = tp[i, 2] - pose[2]
            j, _ = _nearest(qx, qy, qz, mp, lo, cell, dims, start, items, d_lim)
            if j < 0:
                continue
            nx, ny, nz = mn[j, 0], mn[j, 1], mn[j, 2]
            if nx == 0.0 and ny == 0.0 and nz == 0.0:
                continue  # no normal there: no residual
            r = nx * (qx - mp[j, 0]) + ny * (qy - mp[j, 1]) + nz * (qz - mp[j, 2])
            w = inv_r2 if abs(r) <= huber else inv_r2 * huber / abs(r)
            jac[0] = -(c * nx - s * ny)
            jac[1] = -(s * nx + c * ny)
            jac[2] = -nz
            jac[3] = nx * qy - ny * qx
            for a in range(4):
                g[a] += w * jac[a] * r
                for b in range(4):
                    h[a, b] += w * jac[a] * jac[b]
        delta = np.linalg.solve(h, -g)
        for k in range(4):
            pose[k] += delta[k]
        if it >= 2 and abs(delta[0]) + abs(delta[1]) + abs(delta[2]) < 1e-5 and abs(delta[3]) < 1e-6:
            break
    c = math.cos(pose[3])
    s = math.sin(pose[3])
    n_in = 0
    sum_r2 = 0.0
    along = 0.0
    for i in range(tp.shape[0]):
        dx = tp[i, 0] - pose[0]
        dy = tp[i, 1] - pose[1]
        qx, qy = _local_xy(dx, dy, c, s)
        qz = tp[i, 2] - pose[2]
        j, _ = _nearest(qx, qy, qz, mp, lo, cell, dims, start, items, dmax)
        if j >= 0:
            r = mn[j, 0] * (qx - mp[j, 0]) + mn[j, 1] * (qy - mp[j, 1]) + mn[j, 2] * (qz - mp[j, 2])
            n_in += 1
            sum_r2 += r * r
            along += mn[j, 0] * mn[j, 0]
    if n_in == 0:
        return 0.0, math.inf, 0.0
    return n_in / tp.shape[0], math.sqrt(sum_r2 / n_in), along


@jit
def search_offset(tp, center, yaw, mp, lo, cell, dims, start, items, max_s, step, dmax):
    """The offset ``s`` (m, along the heading ``yaw``, ``|s| <= max_s`` in steps of ``step``)
    of the box centre that gives the most points of ``tp (T, 3)`` a model point within
    ``dmax``; the smallest ``|s|`` among equals."""
    c = math.cos(yaw)
    s = math.sin(yaw)
    n_steps = int(max_s / step)
    best_s = 0.0
    best_n = -1
    for a in range(2 * n_steps + 1):
        off = step * ((a + 1) // 2) * (1 if a % 2 == 1 else -1)  # 0, step, -step, 2 step, ...
        n = 0
        for i in range(tp.shape[0]):
            dx = tp[i, 0] - center[0] - off * c
            dy = tp[i, 1] - center[1] - off * s
            qx, qy = _local_xy(dx, dy, c, s)
            j, _ = _nearest(qx, qy, tp[i, 2] - center[2], mp, lo, cell, dims, start, items, dmax)
            if j >= 0:
                n += 1
        if n > best_n:
            best_n = n
            best_s = off
    return best_s
