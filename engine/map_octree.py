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

MAX_DEPTH = 21  # 3 · 21 = 63 code bits: codes are non-negative int64


def _spread_bits(v: int) -> int:
    out = 0
    for k in range(11):
        out |= ((v >> k) & 1) << (3 * k)
    return out


_SPREAD = np.array([_spread_bits(v) for v in range(1 << 11)], np.int64)  # 11 bits spread to every third


@inline
def _spread(v):
    """The low 21 bits of ``v`` spread to every third bit (two table look-ups)."""
    return _SPREAD[v & 0x7FF] | (_SPREAD[(v >> 11) & 0x3FF] << 33)


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


@inline
def floor_div(v, d, inv):
    """``floor(v / d)`` of integers ``|v| < 2**52``, ``d >= 1`` (``inv = 1 / d`` as float64)
    without a division or a libm floor: the truncated product is within one of the floor
    (its error is far below the ``1/d`` a non-whole quotient keeps from a whole number), and
    the exact integer remainder corrects it."""
    q = np.int64(np.float64(v) * inv)
    r = v - q * d
    return q - np.int64(r < 0) + np.int64(r >= d)


@inline
def _code(x, y, z, origin, voxel, inv):
    return (_spread(floor_div(np.int64(x) - origin[0], voxel, inv))
            | (_spread(floor_div(np.int64(y) - origin[1], voxel, inv)) << 1)
            | (_spread(floor_div(np.int64(z) - origin[2], voxel, inv)) << 2))


@pjit
def _codes_kernel(x, y, z, origin, voxel, out):
    inv = 1.0 / voxel
    for i in prange(x.shape[0]):
        out[i] = _code(x[i], y[i], z[i], origin, voxel, inv)


def morton_codes(x: np.ndarray, y: np.ndarray, z: np.ndarray, voxel_q: int,
                 origin: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """``(N,) int64`` codes of the voxels of integer positions ``x, y, z`` (``(N,)`` each, any
    integer dtype, quanta; ``0 <= v - origin < voxel_q · 2**21``)."""
    out = np.empty(len(x), np.int64)
    _codes_kernel(x, y, z, np.asarray(origin, np.int64), np.int64(voxel_q), out)
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


RECORD_WORDS = 4  # a pooled point: four int32 words (write_record)
MAX_CELL_BITS = 8  # a voxel's code within its counting cell takes 3 · cell_bits <= 24 bits of a record
MAX_CELL_Q = 1 << 16  # a position within its counting cell takes 16 bits of a record
_DIGIT = 8  # radix digit of the sort inside a cell: 256 write heads
_WIDE_DIGIT, _WIDE_CELL = 12, 4096  # in cells of at least 4096 points: 12-bit digits (two passes for 24 bits)
_PART, _MAX_SPLIT = 1 << 14, 12  # a cell is split in parts of about 16 k records (sorted in L2), by at most 12 bits


@inline
def write_record(words, floats, p, x, y, z, intensity, r, g, b, voxel, inv, cell_bits):
    """Row ``p`` of ``words`` (``(R, RECORD_WORDS) int32``; ``floats`` its float32 view) made the
    record of the point at integer ``x y z`` (quanta; ``inv = 1 / voxel``), its counting cell
    the cube of ``voxel · 2**cell_bits`` (<= :data:`MAX_CELL_Q`) quanta on the grid anchored at
    0 holding it, ``cell_bits <= MAX_CELL_BITS``:

    word 0 ``x | y << 16``, word 1 ``z | r << 16 | g << 24`` (positions in quanta from the
    cell's min corner), word 2 the intensity's float32 bits, word 3 ``b | v << 8`` (``v``: the
    Morton code of the point's voxel within the cell). The frame is kept with the record's run.
    """
    vx = floor_div(np.int64(x), voxel, inv)
    vy = floor_div(np.int64(y), voxel, inv)
    vz = floor_div(np.int64(z), voxel, inv)
    cell_q = voxel << cell_bits
    mask = (np.int64(1) << cell_bits) - 1
    lx = np.int64(x) - (vx >> cell_bits) * cell_q
    ly = np.int64(y) - (vy >> cell_bits) * cell_q
    lz = np.int64(z) - (vz >> cell_bits) * cell_q
    code = _SPREAD[vx & mask] | (_SPREAD[vy & mask] << 1) | (_SPREAD[vz & mask] << 2)
    words[p, 0] = np.int32(np.uint32(lx | (ly << 16)))
    words[p, 1] = np.int32(np.uint32(lz | (np.int64(r) << 16) | (np.int64(g) << 24)))
    floats[p, 2] = intensity
    words[p, 3] = np.int32(np.uint32(np.int64(b) | (code << 8)))


@jit
def _merge_part(cell, cell_floats, frames, a, n, low_bits, keys, tmp, hist, high, cx, cy, cz,
                codes, ox, oy, oz, oi, o_r, o_g, o_b, ocount, ofirst, olast, m):
    """The records ``cell[a:a + n]`` (their frames ``frames[a:a + n]``), whose voxel codes share
    all but their ``low_bits`` low bits: an LSD radix sort of the codes, then each run of equal
    codes merged into output row ``m`` on (:func:`merge_voxels`; ``high``: the codes' high bits,
    ``cx cy cz`` the cell's corner). Returns the next output row."""
    idx_bits = 1
    while (np.int64(1) << idx_bits) < n:
        idx_bits += 1
    digit = _WIDE_DIGIT if n >= _WIDE_CELL else _DIGIT  # fewer passes where the histogram's set-up pays
    radix = 1 << digit
    passes = (low_bits + digit - 1) // digit
    hist[:passes, :radix] = 0
    for j in range(n):
        low = np.int64(np.uint32(cell[a + j, 3])) >> 8
        keys[j] = (low << idx_bits) | j
        for p in range(passes):
            hist[p, (low >> (digit * p)) & (radix - 1)] += 1
    src, dst = keys, tmp
    for p in range(passes):
        shift = idx_bits + digit * p
        if hist[p, (src[0] >> shift) & (radix - 1)] == n:  # one digit value: the pass keeps the order
            continue
        start = 0
        for d in range(radix):
            k = hist[p, d]
            hist[p, d] = start
            start += k
        for j in range(n):
            d = (src[j] >> shift) & (radix - 1)
            dst[hist[p, d]] = src[j]
            hist[p, d] += 1
        src, dst = dst, src
    j = 0
    while j < n:  # runs of equal codes: the count-weighted means (module docstring of merge_voxels)
        low = src[j] >> idx_bits
        sx = sy = sz = sr = sg = sb = np.int64(0)
        si = 0.0
        f0, f1 = np.uint32(0xFFFFFFFF), np.uint32(0)
        first = j
        while j < n and (src[j] >> idx_bits) == low:
            i = a + (src[j] & ((np.int64(1) << idx_bits) - 1))
            w0, w1 = np.int64(np.uint32(cell[i, 0])), np.int64(np.uint32(cell[i, 1]))
            sx += w0 & 0xFFFF
            sy += w0 >> 16
            sz += w1 & 0xFFFF
            sr += (w1 >> 16) & 0xFF
            sg += w1 >> 24
            sb += cell[i, 3] & 0xFF
            si += cell_floats[i, 2]
            f = np.uint32(frames[i])
            f0, f1 = min(f0, f), max(f1, f)
            j += 1
        cnt = np.int64(j - first)
        codes[m] = high | low
        if cnt == 1:  # most voxels: no divisions
            ox[m], oy[m], oz[m], o_r[m], o_g[m], o_b[m], oi[m] = cx + sx, cy + sy, cz + sz, sr, sg, sb, si
        else:
            ox[m], oy[m], oz[m] = cx + sx // cnt, cy + sy // cnt, cz + sz // cnt
            twice = 2 * cnt  # colours rounded to nearest
            o_r[m], o_g[m], o_b[m] = (2 * sr + cnt) // twice, (2 * sg + cnt) // twice, (2 * sb + cnt) // twice
            oi[m] = si / cnt
        ocount[m] = min(cnt, 0xFFFFFFFF)
        ofirst[m], olast[m] = f0, f1
        m += 1
    return m


@jit
def _merge_kernel(words, runs, cell_runs, cell_codes, cell_xyz, low_bits, cell, cell_floats, frames, keys, tmp,
                  codes, ox, oy, oz, oi, o_r, o_g, o_b, ocount, ofirst, olast):
    """Per cell: its runs of records gathered into ``cell``, a cell of more than :data:`_PART`
    records split by the top bits of its voxel codes (a counting sort into parts of 8**s
    octants), so that each part sorted and merged (:func:`_merge_part`) stays in cache.
    Returns the rows written."""
    hist = np.empty((max((low_bits + _DIGIT - 1) // _DIGIT, 1), 1 << _WIDE_DIGIT), np.int64)
    starts = np.empty((1 << _MAX_SPLIT) + 1, np.int64)
    m = 0
    for c in range(cell_runs.shape[0] - 1):
        n = 0
        for r in range(cell_runs[c], cell_runs[c + 1]):
            n += runs[r, 1]
        s = 0
        while (n >> s) > _PART and s + 3 <= min(low_bits, _MAX_SPLIT):
            s += 3
        parts, top = 1 << s, 8 + low_bits - s  # a record's part: word 3's bits from ``top`` on
        starts[:parts + 1] = 0
        if s:
            for r in range(cell_runs[c], cell_runs[c + 1]):
                for i in range(runs[r, 0], runs[r, 0] + runs[r, 1]):
                    starts[(np.int64(np.uint32(words[i, 3])) >> top) + 1] += 1
        else:
            starts[1] = n
        for p in range(parts):
            starts[p + 1] += starts[p]
        for r in range(cell_runs[c], cell_runs[c + 1]):
            first, length, frame = runs[r, 0], runs[r, 1], runs[r, 2]
            if not s:
                at = starts[0]
                cell[at:at + length] = words[first:first + length]
                frames[at:at + length] = frame
                starts[0] = at + length
                continue
            for i in range(first, first + length):
                p = np.int64(np.uint32(words[i, 3])) >> top
                at = starts[p]
                cell[at, 0], cell[at, 1], cell[at, 2], cell[at, 3] = words[i, 0], words[i, 1], words[i, 2], words[i, 3]
                frames[at] = frame
                starts[p] = at + 1
        high, cx, cy, cz = cell_codes[c] << low_bits, cell_xyz[c, 0], cell_xyz[c, 1], cell_xyz[c, 2]
        a = 0
        for p in range(parts):  # each part's records end where the next one's began
            if starts[p] > a:
                m = _merge_part(cell, cell_floats, frames, a, starts[p] - a, low_bits - s, keys, tmp, hist, high, cx,
                                cy, cz, codes, ox, oy, oz, oi, o_r, o_g, o_b, ocount, ofirst, olast, m)
            a = starts[p]
    return m


MERGE_COLUMNS = ("x", "y", "z", "intensity", "r", "g", "b", "count", "first", "last")
_MERGE_DTYPES = (*[np.int32] * 3, np.float32, *[np.uint8] * 3, *[np.uint32] * 3)


class Workspace:
    """Arrays a thread reuses from call to call (memory reused costs far less than memory
    first touched): :meth:`take` gives a view of a kept buffer, valid until the next ``take``
    of that name."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def take(self, name: str, n: int, dtype: np.dtype | type) -> np.ndarray:
        """``(n,)`` uninitialised items of ``dtype``."""
        kept = self._arrays.get(name)
        if kept is None or len(kept) < n or kept.dtype != dtype:
            kept = self._arrays[name] = np.empty(n + n // 4, dtype)
        return kept[:n]


def merge_voxels(records: np.ndarray, runs: np.ndarray, cell_runs: np.ndarray, cell_codes: np.ndarray,
                 cell_xyz: np.ndarray, cell_bits: int, work: Workspace | None = None
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Merge the points of each voxel into one map point.

    Args:
        records: ``(R, RECORD_WORDS) int32`` points (:func:`write_record`).
        runs: ``(U, 3) int64`` runs of consecutive rows of ``records`` in one counting cell
            (first row, length, frame), grouped by cell: cell ``c`` is the runs
            ``cell_runs[c]..cell_runs[c + 1] - 1`` one after the other.
        cell_runs: ``(C + 1,) int64``.
        cell_codes: ``(C,) int64`` the cells' Morton codes at their level of the octree,
            ascending; ``cell_xyz``: ``(C, 3) int64`` their min corners in quanta from the
            cube's; cells of ``2**cell_bits`` voxels a side.

    Returns:
        ``(codes (M,) int64 ascending unique, merged columns (M,))``: ``x y z`` int32 quanta
        from the cube's corner (the mean, rounded down, so inside the voxel), ``intensity``
        float32 (mean), ``r g b`` uint8 (mean, rounded), ``count`` uint32 (points merged,
        saturating), ``first last`` uint32 (min, max frame). Points of a voxel are summed in
        input order. With ``work``, the arrays are its (valid until its next use).
    """
    take = (work or Workspace()).take
    runs = np.ascontiguousarray(runs, np.int64).reshape(-1, 3)
    cell_runs = np.ascontiguousarray(cell_runs, np.int64)
    ends = np.concatenate([[0], np.cumsum(runs[:, 1])])
    n = int(ends[-1])
    words = np.ascontiguousarray(records, np.int32).reshape(len(records), RECORD_WORDS)
    biggest = int(np.diff(ends[cell_runs]).max()) if len(cell_runs) > 1 else 0
    out = {k: take(k, n, dtype) for k, dtype in zip(MERGE_COLUMNS, _MERGE_DTYPES)}
    codes = take("codes", n, np.int64)
    cell = take("cell", biggest * RECORD_WORDS, np.int32).reshape(biggest, RECORD_WORDS)
    m = _merge_kernel(words, runs, cell_runs, np.ascontiguousarray(cell_codes, np.int64),
                      np.ascontiguousarray(cell_xyz, np.int64).reshape(-1, 3), np.int64(3 * cell_bits), cell,
                      cell.view(np.float32), take("frames", biggest, np.int64), take("keys", biggest, np.int64),
                      take("tmp", biggest, np.int64), codes, *(out[k] for k in MERGE_COLUMNS))
    return codes[:m], {k: v[:m] for k, v in out.items()}


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
    """Bottom-up selection (module docstring). Node ``k``'s pool (its points a parent may take,
    ascending) is ``starts[k] .. starts[k] + pool_len[k] - 1`` for a leaf (all its points), else
    ``buf[starts[k] : starts[k] + pool_len[k]]`` (``buf`` (N,) int64)."""
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
            owner[s:ends[k]] = k
            pool_len[k] = ends[k] - s
            continue
        shift = 3 * max(0, depth - levels[k] - grid_bits)
        taken = s  # this node's pool, written over its children's pools as they are read
        c = first_child[k]
        while c >= 0:  # one per grid cell (within one child): the middle candidate of each run of equal cells
            a, e = starts[c], starts[c] + pool_len[c]
            while a < e:
                i = a if leaf[c] else buf[a]
                cell = codes[i] >> shift
                b = a + 1
                while b < e and (codes[b if leaf[c] else buf[b]] >> shift) == cell:
                    b += 1
                i = (a + b) // 2 if leaf[c] else buf[(a + b) // 2]
                owner[i] = k
                buf[taken] = i
                taken += 1
                a = b
            c = next_sib[c]
        pool_len[k] = taken - s


def select_lod(codes: np.ndarray, nodes: dict[str, np.ndarray], depth: int, grid_bits: int,
               work: Workspace | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(owner (N,) int64, pool (P,) int64)``: the node (row of ``nodes``, from
    :func:`octree_shape` or any pre-order tree whose leaves cover ``codes``) holding each
    point, and the root's own points (the candidates of the levels above it), ascending.
    With ``work``, ``owner`` is its (valid until its next use)."""
    n = len(codes)
    take = (work or Workspace()).take
    owner = take("owner", n, np.int64)
    buf = take("select", n, np.int64)
    pool_len = np.empty(len(nodes["levels"]), np.int64)
    _select_kernel(np.ascontiguousarray(codes, np.int64), nodes["levels"], nodes["starts"], nodes["ends"],
                   nodes["parents"], nodes["leaf"], depth, grid_bits, owner, pool_len, buf)
    s = nodes["starts"][0]
    return owner, np.arange(s, s + pool_len[0]) if nodes["leaf"][0] else buf[s:s + pool_len[0]].copy()


def _warmup() -> None:
    x = np.array([0, 5, 5, 40], np.int32)
    morton_codes(x, x, x, 10)
    records = np.zeros((4, RECORD_WORDS), np.int32)
    for p in range(4):
        write_record(records, records.view(np.float32), p, x[p], x[p], x[p], 1.0, 1, 2, 3, 10, 0.1, 3)
    codes, _ = merge_voxels(records, np.array([[0, 3, 0], [3, 1, 1]]), np.array([0, 1, 2]), np.array([0, 1]),
                            np.array([[0, 0, 0], [80, 0, 0]]), 3)
    nodes = octree_shape(codes, 0, 3, 1, 1)
    select_lod(codes, nodes, 3, 1)
    node_xyz(nodes["prefixes"])
