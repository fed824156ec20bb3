"""The octree pool's file I/O: appends and reads straight from and into page-aligned arrays, or
through the staging buffer, give the same bytes."""

from __future__ import annotations

import numpy as np
import pytest

from formats.octree_chunks import RAW
from formats.octree_pool import Appender, aligned_empty, read_into


def test_appends_aligned_or_not_write_the_bytes_in_order(tmp_path):
    rng = np.random.default_rng(0)
    aligned = aligned_empty(3000, RAW)  # 48 000 bytes: eleven whole blocks written straight, a tail staged
    aligned.view(np.uint8)[:] = rng.integers(0, 256, aligned.nbytes, dtype=np.uint8)
    small = rng.integers(0, 256, 100, dtype=np.uint8)
    parts = [aligned, small, aligned, aligned[1:], small]  # the second aligned array starts mid-block: staged
    out = Appender(tmp_path / "f.bin", stage_bytes=1 << 14)
    for part in parts:
        out.write(part)
    out.flush()
    out.write(small)
    out.close()
    expected = b"".join(p.tobytes() for p in parts) + small.tobytes()
    assert (tmp_path / "f.bin").read_bytes() == expected
    again = Appender(tmp_path / "f.bin", size=len(expected) - 50)  # cut back, then appended to
    again.write(small)
    again.close()
    assert (tmp_path / "f.bin").read_bytes() == expected[:-50] + small.tobytes()


@pytest.mark.parametrize("size", [0, 16, 4096, 40_000, 3 * 4096 + 48])
def test_reads_straight_or_staged_give_the_file(tmp_path, size):
    rng = np.random.default_rng(size)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    (tmp_path / "f.bin").write_bytes(data.tobytes())
    n = size // RAW.itemsize
    for out in (aligned_empty(n + 10, RAW), aligned_empty(n + 300, RAW)[256:], np.empty(n + 10, RAW),
                aligned_empty(n + 10, RAW)[1:]):  # straight, straight at a later page, staged, staged
        assert read_into(tmp_path / "f.bin", out) == n
        assert out[:n].tobytes() == data.tobytes()
    if size:
        with pytest.raises(ValueError, match="bytes for a buffer"):
            read_into(tmp_path / "f.bin", aligned_empty(n - 1, RAW))
