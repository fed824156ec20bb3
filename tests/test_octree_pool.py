"""The octree pool's file I/O: appends and reads (of a file's records from any one on) straight
from and into page-aligned arrays, or through the staging buffer, give the same bytes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from formats.octree_chunks import RAW
from formats.octree_pool import Appender, aligned_empty, read_range


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


def test_flushes_rewrite_at_most_the_partial_last_block_then_plain_writes_follow(tmp_path, monkeypatch):
    written = []
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: written.append(len(data)) or real_pwrite(fd, data,
                                                                                                       offset))
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 256, n, dtype=np.uint8) for n in (5000, 3, 9000, 4093, 20_000, 1)]
    out = Appender(tmp_path / "f.bin", stage_bytes=1 << 15)
    for i, part in enumerate(parts):  # each appended part flushed, as a node writer does after every chunk
        out.write(part)
        out.flush()
        assert (tmp_path / "f.bin").read_bytes() == b"".join(p.tobytes() for p in parts[:i + 1])
    total = sum(len(p) for p in parts)
    assert sum(written) <= total + len(parts) * 4096  # not the whole stage again at every flush
    out.plain()  # the rest through the page cache, straight from the arrays
    for part in parts[::-1]:
        out.write(part)
    out.close()
    assert (tmp_path / "f.bin").read_bytes() == b"".join(p.tobytes() for p in parts + parts[::-1])


@pytest.mark.parametrize("size", [0, 16, 4096, 40_000, 3 * 4096 + 48])
def test_ranges_read_straight_or_staged_give_the_file(tmp_path, size):
    rng = np.random.default_rng(size)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    (tmp_path / "f.bin").write_bytes(data.tobytes())
    n = size // RAW.itemsize
    records = np.frombuffer(data.tobytes()[:n * RAW.itemsize], RAW)
    for start in (0, 256, 3, n):  # from a block (straight where the buffer allows) or within one (staged)
        want = max(n - start, 0)
        for out in (aligned_empty(want + 10, RAW), aligned_empty(want + 300, RAW)[256:], np.empty(want + 10, RAW),
                    aligned_empty(want + 10, RAW)[1:]):  # straight, straight at a later page, staged, staged
            assert read_range(tmp_path / "f.bin", out, start) == want  # fewer than the buffer holds: the file ends
            assert out[:want].tobytes() == records[start:].tobytes()
        part = aligned_empty(2, RAW)
        assert read_range(tmp_path / "f.bin", part[:1], start) == min(1, want)  # as many as the buffer holds
        assert part[:min(1, want)].tobytes() == records[start:start + 1].tobytes()
