"""Level-of-detail voxel grids on the GPU: :func:`engine.voxel.first_points_levels`.

Per level, one thread per point: its voxel key (``engine.voxel._voxel_key``, the CPU's) is
inserted into an open-addressing hash table (linear probing, a compare-and-swap claims an
empty slot, at most half full) whose slot keeps the smallest index of the points that hit it
(atomic minimum); then each point whose index is its voxel's minimum is flagged. The
flagged indices, ascending, are the voxels' first points in order of first appearance —
exactly the CPU's result, whatever order the threads ran in.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import cuda

from engine import voxel as _voxel
from engine.cuda._jit import device, kernel, launch, launch_strided, workspace

voxel_key = device(_voxel._voxel_key)
hash_slot = device(_voxel.hash_slot)
_NONE = np.int64(np.iinfo(np.int64).max)


@kernel
def _reset(table_keys, table_first):
    for k in range(cuda.grid(1), table_keys.shape[0], cuda.gridsize(1)):
        table_keys[k] = -1
        table_first[k] = _NONE


@kernel
def _insert(xyz, origin, inv_size, base, dims, bits, table_keys, table_first, slots):
    """Point ``i``'s voxel into the table (keys are >= 0; -1 marks an empty slot)."""
    i = cuda.grid(1)
    if i >= xyz.shape[0]:
        return
    key = voxel_key(xyz, i, origin, inv_size, base, dims)
    mask = (np.int64(1) << bits) - 1
    h = hash_slot(key, bits)
    while True:
        held = cuda.atomic.cas(table_keys, h, np.int64(-1), key)
        if held == -1 or held == key:
            break
        h = (h + 1) & mask
    cuda.atomic.min(table_first, h, np.int64(i))
    slots[i] = h


@kernel
def _flag(slots, table_first, flags):
    i = cuda.grid(1)
    if i < slots.shape[0]:
        flags[i] = table_first[slots[i]] == i


def launch_first_points(p: np.ndarray, xyz_dev: Any, grids: Sequence[tuple[np.ndarray, ...]], prefix: str) -> Any:
    """Queue the first-point flags ``(L, N) bool`` (device) of the points ``xyz_dev`` (host
    copy ``p``) on each level's grid ``(origin, 1/size, base, dims)`` of ``engine.voxel._grid``."""
    ws = workspace()
    n = len(p)
    bits = max(10, (2 * n - 1).bit_length())
    table_keys = ws.device(f"{prefix}.keys", (1 << bits,), np.int64)
    table_first = ws.device(f"{prefix}.first", (1 << bits,), np.int64)
    slots = ws.device(f"{prefix}.slots", (n,), np.int64)
    flags = ws.device(f"{prefix}.flags", (len(grids), n), np.bool_)
    for level, grid in enumerate(grids):
        o, inv, base, dims = (ws.upload(f"{prefix}.grid{level}.{k}", a) for k, a in enumerate(grid))
        launch_strided(_reset, 1 << bits, table_keys, table_first)
        launch(_insert, n, xyz_dev, o, inv, base, dims, np.int64(bits), table_keys, table_first, slots)
        launch(_flag, n, slots, table_first, flags[level])
    return flags


def first_points_levels(p: np.ndarray, grids: Sequence[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    """:func:`engine.voxel.first_points_levels` on the GPU (points and grids checked by it)."""
    ws = workspace()
    flags = ws.download("voxel.flags", launch_first_points(p, ws.upload("voxel.xyz", p), grids, "voxel"))
    ws.sync()
    return [np.flatnonzero(row) for row in flags]
