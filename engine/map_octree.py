"""Level-of-detail octree kernels for scene maps: Morton codes, voxel merging, node selection.

The octree is a cube of side ``voxel_q · 2**depth`` quanta (integer positions, e.g. mm) whose
min corner is the origin of the positions given here. Level ``ℓ`` cuts it into ``8**ℓ``
cubes; level ``depth`` cells are the merge voxels. A point's *code* is the Morton
interleave of its voxel's integer coordinates (bit ``3k`` = x bit ``k``, ``3k+1`` = y,
``3k+2`` = z: COPC's child order), so the points of any cell are a contiguous run of the
sorted codes and a node ``(level, prefix)`` holds the codes with ``code >> 3·(depth −
level) == prefix``.

Selection (Potree 2 / COPC style, bottom-up): a node whose subtree holds at most
``leaf_max`` points, or whose grid cells are already voxels, is a leaf and keeps them all.
An inner node at level ``ℓ`` gathers its children's points (a leaf's all, an inner child's
own selection) and takes one per cell of its ``2**grid_bits`` grid (the cells of level
``ℓ + grid_bits``): the middle one, in code order, of each cell's candidates. Taken points
leave the child, so every point lies in exactly one node, inside that node's cube, and each
node is a subsample of its children's points with spacing ``side / 2**grid_bits``.
"""

from __future__ import annotations

import numpy as np

from engine._jit import inline, jit, pjit, prange
from engine.voxel import _radix_pass

MAX_DEPTH = 21  # 3 · 21 = 63 code bits: codes are non-negative int64


@inline
def _spread(v):
    """The low 21 bits of ``v`` spread to every third bit."""
    v &= 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    v = (v | (v << 2)) & 0x1249249249249249
    return v


@inline
def _compact(v):
    """Inverse of :func:`_spread`: every third bit of ``v`` gathered into the low 21 bits."""
    v &= 0x1249249249249249
    v = (v | (v >> 2)) & 0x10C30C30C30C30C3
    v = (v | (v >> 4)) & 0x100F00F00F00F00F
    v = (v | (v >> 8)) & 0x1F0000FF0000FF
    v = (v | (v >> 16)) & 0x1F00000000FFFF
    v = (v | (v >> 32)) & 0x1FFFFF
    return v


@pjit
def _codes_kernel(x, y, z, origin, voxel_q, out):
    for i in prange(x.shape[0]):
        out[i] = (_spread((np.int64(x[i]) - origin[0]) // voxel_q)
                  | (_spread((np.int64(y[i]) - origin[1]) // voxel_q) << 1)
                  | (_spread((np.int64(z[i]) - origin[2]) // voxel_q) << 2))


def morton_codes(x: np.ndarray, y: np.ndarray, z: np.ndarray, voxel_q: int,
                 origin: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """``(N,) int64`` codes of the voxels of integer positions ``x, y, z`` (``(N,)`` each, any
    integer dtype, quanta; ``0 <= v - origin < voxel_q · 2**21``)."""
    out = np.empty(len(x), np.int64)
    _codes_kernel(x, y, z, np.asarray(origin, np.int64), np.int64(voxel_q), out)
    return out


@pjit
def _gather_kernel(rows, order, out):
    for j in prange(order.shape[0]):
        for k in range(rows.shape[1]):
            out[j, k] = rows[order[j], k]


def gather_rows(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``rows[order]`` for a C-contiguous ``(N, W)`` array (fixed-size records viewed as
    words), in parallel."""
    out = np.empty((len(order), rows.shape[1]), rows.dtype)
    _gather_kernel(rows, np.ascontiguousarray(order, np.int64), out)
    return out


@jit
def _keys_kernel(prefixes, out):
    for i in range(prefixes.shape[0]):
        p = prefixes[i]
        out[i, 0], out[i, 1], out[i, 2] = _compact(p), _compact(p >> 1), _compact(p >> 2)


def node_xyz(prefixes: np.ndarray) -> np.ndarray:
    """``(M, 3) int64`` cell coordinates ``(x, y, z)`` within their level of node code prefixes
    ``(M,)`` (COPC's ``VoxelKey`` without the level)."""
    p = np.ascontiguousarray(prefixes, np.int64)
    out = np.empty((len(p), 3), np.int64)
    _keys_kernel(p, out)
    return out


def sort_order(codes: np.ndarray, bits: int) -> np.ndarray:
    """``(N,) int64`` stable order sorting ``codes`` (``(N,) int64``, each below ``2**bits``):
    an LSD radix sort (:func:`engine.voxel._radix_pass`, parallel over chunks of points)."""
    n = len(codes)
    idx_bits = max(1, int(n - 1).bit_length())
    if bits <= 0 or n < 2:
        return np.arange(n, dtype=np.int64)
    passes = -(-bits // 11)
    digit = -(-bits // passes)
    if bits + idx_bits <= 63:  # key and index packed in one int64: half the memory traffic
        keys = (np.ascontiguousarray(codes, np.int64) << idx_bits) | np.arange(n, dtype=np.int64)
        tmp = np.empty_like(keys)
        none = np.empty(0, np.int64)
        for p in range(passes):
            _radix_pass(keys, none, tmp, none, idx_bits + p * digit, digit, False)
            keys, tmp = tmp, keys
        return keys & ((np.int64(1) << idx_bits) - 1)
    keys, idx = np.array(codes, np.int64), np.arange(n, dtype=np.int64)
    keys2, idx2 = np.empty_like(keys), np.empty_like(idx)
    for p in range(passes):
        _radix_pass(keys, idx, keys2, idx2, p * digit, digit, True)
        keys, keys2, idx, idx2 = keys2, keys, idx2, idx
    return idx


@jit
def _runs_kernel(codes, run_start):
    """Starts of the runs of equal (sorted) ``codes``; returns their number."""
    r = 0
    for j in range(codes.shape[0]):
        if j == 0 or codes[j] != codes[j - 1]:
            run_start[r] = j
            r += 1
    run_start[r] = codes.shape[0]
    return r


@pjit
def _merge_kernel(run_start, x, y, z, intensity, r, g, b, count, first, last,
                  ox, oy, oz, oi, o_r, o_g, o_b, ocount, ofirst, olast):
    """Each run of points → one: position and colour the count-weighted mean (position
    rounded down, colour to nearest), intensity the weighted mean, count the sum, frames
    min / max."""
    for v in prange(run_start.shape[0] - 1):
        sx = sy = sz = 0
        sr = sg = sb = np.int64(0)
        si = 0.0
        n = np.int64(0)
        f0 = first[run_start[v]]
        f1 = last[run_start[v]]
        for i in range(run_start[v], run_start[v + 1]):
            c = np.int64(count[i])
            sx += x[i] * c
            sy += y[i] * c
            sz += z[i] * c
            sr += np.int64(r[i]) * c
            sg += np.int64(g[i]) * c
            sb += np.int64(b[i]) * c
            si += intensity[i] * c
            n += c
            f0 = min(f0, first[i])
            f1 = max(f1, last[i])
        ox[v], oy[v], oz[v] = sx // n, sy // n, sz // n
        o_r[v], o_g[v], o_b[v] = (2 * sr + n) // (2 * n), (2 * sg + n) // (2 * n), (2 * sb + n) // (2 * n)
        oi[v] = si / n
        ocount[v] = min(n, 0xFFFFFFFF)
        ofirst[v], olast[v] = f0, f1


MERGE_COLUMNS = ("x", "y", "z", "intensity", "r", "g", "b", "count", "first", "last")


def merge_voxels(codes: np.ndarray, points: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Merge the points of equal codes (one map point per voxel).

    Args:
        codes: ``(N,) int64`` ascending (:func:`sort_order`, :func:`gather_rows`).
        points: in the same order, :data:`MERGE_COLUMNS` ``(N,)`` each: ``x y z`` (int,
            quanta), ``intensity`` (float), ``r g b`` (uint8), ``count`` (points already
            merged into each), ``first last`` (frame numbers).

    Returns:
        ``(codes (M,) int64 ascending unique, merged columns (M,))``: ``x y z`` int32 (the
        count-weighted mean, rounded down, so inside the voxel), ``intensity`` float32 (mean),
        ``r g b`` uint8 (mean, rounded), ``count`` uint32 (sum, saturating), ``first last``
        uint32 (min, max).
    """
    run_start = np.empty(len(codes) + 1, np.int64)
    m = _runs_kernel(codes, run_start)
    run_start = run_start[:m + 1]
    out = {k: np.empty(m, np.int32) for k in "xyz"}
    out["intensity"] = np.empty(m, np.float32)
    out.update({k: np.empty(m, np.uint8) for k in "rgb"})
    out.update({k: np.empty(m, np.uint32) for k in ("count", "first", "last")})
    _merge_kernel(run_start, *(points[k] for k in MERGE_COLUMNS), *(out[k] for k in MERGE_COLUMNS))
    return codes[run_start[:-1]], out


@jit
def _shape_kernel(codes, level0, depth, leaf_level, leaf_max, levels, prefixes, starts, ends, parents, leaf):
    """Nodes of the subtree over ``codes`` (sorted, unique, all in the node at ``level0``), in
    pre-order (children in octant order right after their parent's earlier siblings'
    subtrees); returns their number."""
    n_nodes = 1
    levels[0], starts[0], ends[0], parents[0] = level0, 0, codes.shape[0], -1
    prefixes[0] = codes[0] >> (3 * (depth - level0)) if codes.shape[0] else 0
    stack = np.empty(8 * (depth + 1) + 1, np.int64)
    stack[0] = 0
    top = 1
    while top:
        top -= 1
        nd = stack[top]
        lv, s, e = levels[nd], starts[nd], ends[nd]
        if e - s <= leaf_max or lv >= leaf_level:
            leaf[nd] = True
            continue
        leaf[nd] = False
        shift = 3 * (depth - lv - 1)
        first_child = n_nodes
        while s < e:  # each child: the run of points sharing the next 3 bits
            p = codes[s] >> shift
            lo, hi = s, e
            while lo < hi:
                mid = (lo + hi) // 2
                if (codes[mid] >> shift) > p:
                    hi = mid
                else:
                    lo = mid + 1
            levels[n_nodes], prefixes[n_nodes], starts[n_nodes], ends[n_nodes] = lv + 1, p, s, lo
            parents[n_nodes] = nd
            n_nodes += 1
            s = lo
        for c in range(n_nodes - 1, first_child - 1, -1):  # pushed in reverse: popped in order
            stack[top] = c
            top += 1
    return n_nodes


def octree_shape(codes: np.ndarray, level0: int, depth: int, grid_bits: int, leaf_max: int) -> dict[str, np.ndarray]:
    """The nodes of the subtree rooted at level ``level0`` holding ``codes`` (``(N,) int64``,
    ascending, unique, one node's): a node is a leaf when it holds at most ``leaf_max``
    points or its grid cells are voxels (level ≥ ``depth − grid_bits``).

    Returns ``levels`` (int64), ``prefixes`` (int64 code prefix), ``starts``/``ends`` (its
    range of ``codes``), ``parents`` (−1 for the root) and ``leaf`` (bool), ``(M,)`` each, in
    pre-order.
    """
    n = len(codes)
    leaf_level = max(level0, depth - grid_bits)
    cap = 1 + 9 * (depth - level0 + 1) * (n // max(leaf_max, 1) + 1)
    arrays = {k: np.empty(cap, np.int64) for k in ("levels", "prefixes", "starts", "ends", "parents")}
    arrays["leaf"] = np.empty(cap, np.bool_)
    m = _shape_kernel(np.ascontiguousarray(codes, np.int64), level0, depth, leaf_level, max(leaf_max, 1),
                      arrays["levels"], arrays["prefixes"], arrays["starts"], arrays["ends"], arrays["parents"],
                      arrays["leaf"])
    return {k: v[:m].copy() for k, v in arrays.items()}


@jit
def _select_kernel(codes, levels, starts, ends, parents, leaf, depth, grid_bits, owner, pool_len, buf):
    """Bottom-up selection (module docstring). ``buf`` (N,) int64: node ``k``'s pool (its points
    a parent may take) is ``buf[starts[k] : starts[k] + pool_len[k]]``."""
    m = levels.shape[0]
    next_sib = np.full(m, -1, np.int64)
    first_child = np.full(m, -1, np.int64)
    for k in range(m - 1, 0, -1):  # children linked in pre-order
        p = parents[k]
        next_sib[k] = first_child[p]
        first_child[p] = k
    for k in range(m - 1, -1, -1):  # reverse pre-order: children before parents
        s = starts[k]
        if leaf[k]:
            for i in range(s, ends[k]):
                owner[i] = k
                buf[i] = i
            pool_len[k] = ends[k] - s
            continue
        w = s  # gather the children's pools, in order, to the front of this node's range
        c = first_child[k]
        while c >= 0:
            for j in range(starts[c], starts[c] + pool_len[c]):
                buf[w] = buf[j]
                w += 1
            c = next_sib[c]
        shift = 3 * max(0, depth - levels[k] - grid_bits)
        taken = s
        a = s
        while a < w:  # one per grid cell: the middle candidate of each run of equal cells
            cell = codes[buf[a]] >> shift
            b = a + 1
            while b < w and (codes[buf[b]] >> shift) == cell:
                b += 1
            i = buf[(a + b) // 2]
            owner[i] = k
            buf[taken] = i
            taken += 1
            a = b
        pool_len[k] = taken - s


def select_lod(codes: np.ndarray, nodes: dict[str, np.ndarray], depth: int, grid_bits: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(owner (N,) int64, pool (P,) int64)``: the node (row of ``nodes``, from
    :func:`octree_shape` or any pre-order tree whose leaves cover ``codes``) holding each
    point, and the root's own points (the candidates of the levels above it), ascending."""
    n = len(codes)
    owner = np.empty(n, np.int64)
    buf = np.empty(n, np.int64)
    pool_len = np.empty(len(nodes["levels"]), np.int64)
    _select_kernel(np.ascontiguousarray(codes, np.int64), nodes["levels"], nodes["starts"], nodes["ends"],
                   nodes["parents"], nodes["leaf"], depth, grid_bits, owner, pool_len, buf)
    return owner, np.sort(buf[nodes["starts"][0]:nodes["starts"][0] + pool_len[0]])


@jit
def _group_kernel(owner, n_nodes, counts, order):
    """Counting sort of point indices by owner (stable): ``counts[k + 1]`` ends as the start
    of node k's points in ``order``."""
    counts[:] = 0
    for i in range(owner.shape[0]):
        counts[owner[i] + 1] += 1
    for k in range(n_nodes):
        counts[k + 1] += counts[k]
    pos = counts[:-1].copy()
    for i in range(owner.shape[0]):
        k = owner[i]
        order[pos[k]] = i
        pos[k] += 1


def group_by_node(owner: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order (N,) int64, starts (n_nodes + 1,) int64)``: point indices grouped by node,
    ascending within each; node k's are ``order[starts[k]:starts[k + 1]]``."""
    counts = np.empty(n_nodes + 1, np.int64)
    order = np.empty(len(owner), np.int64)
    _group_kernel(np.ascontiguousarray(owner, np.int64), n_nodes, counts, order)
    return order, counts


def _warmup() -> None:
    x = np.array([0, 5, 5, 40], np.int32)
    codes = morton_codes(x, x, x, 10)
    order = sort_order(codes, 6)
    sort_order(codes << 50, 62)
    gather_rows(np.zeros((4, 6), np.int32), order)
    cols: dict[str, np.ndarray] = {k: x.copy() for k in "xyz"}
    cols.update(intensity=np.ones(4, np.float32), count=np.ones(4, np.uint32), first=np.zeros(4, np.uint32),
                last=np.zeros(4, np.uint32), **{k: np.zeros(4, np.uint8) for k in "rgb"})
    merged_codes, _ = merge_voxels(codes[order], cols)
    nodes = octree_shape(merged_codes, 0, 3, 1, 1)
    owner, _ = select_lod(merged_codes, nodes, 3, 1)
    group_by_node(owner, len(nodes["levels"]))
    node_xyz(nodes["prefixes"])
