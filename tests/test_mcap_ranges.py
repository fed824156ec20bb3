"""formats.ros.mcap_ranges: messages of an MCAP file read as byte ranges through its chunks'
message indexes, against the mcap library's own reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from formats.errors import FormatError
from formats.ros.mcap_ranges import McapRanges


def _write(path: Path, compression: CompressionType, chunk_size: int = 4096) -> Path:
    """Two topics of messages of varied sizes (0 .. 3000 bytes) every 10 ns, in small chunks."""
    rng = np.random.default_rng(1)
    with open(path, "wb") as fh:
        w = Writer(fh, compression=compression, chunk_size=chunk_size)
        w.start()
        schema = w.register_schema(name="raw", encoding="", data=b"")
        channels = {t: w.register_channel(topic=t, message_encoding="cdr", schema_id=schema) for t in ("/a", "/b")}
        for i in range(200):
            topic = "/a" if i % 3 else "/b"
            data = rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()
            w.add_message(channel_id=channels[topic], log_time=10 * i, data=data, publish_time=10 * i)
        w.finish()
    return path


def _library(path: Path, topics, start: int, stop: int) -> dict:
    with open(path, "rb") as fh:
        return {(c.topic, m.log_time): m.data for _, c, m in
                make_reader(fh).iter_messages(topics=list(topics), starting_at=start, ending_before=stop)}


def test_byte_ranges_are_the_librarys_messages(tmp_path):
    path = _write(tmp_path / "a.mcap", CompressionType.NONE)
    ranges = McapRanges(path)
    assert len(ranges.chunks) > 10
    for topics, start, stop in [(("/a",), 0, 2000), (("/a", "/b"), 355, 1210), (("/b",), 990, 991),
                                (("/a", "/b"), 1995, 5000), (("/c",), 0, 2000), (("/a",), 2000, 3000)]:
        got = ranges.read(topics, start, stop)
        assert got == _library(path, topics, start, stop)
    assert len(ranges.read(("/a", "/b"), 0, 2000)) == 200
    ranges.close()


def test_compressed_chunks_are_not_located(tmp_path):
    path = _write(tmp_path / "z.mcap", CompressionType.ZSTD)
    ranges = McapRanges(path)
    assert ranges.read(("/a",), 100, 200) is None  # the caller reads them through the library
    assert ranges.read(("/c",), 100, 200) == {}
    ranges.close()


def test_damaged_index_or_record_is_a_format_error_at_its_offset(tmp_path):
    path = _write(tmp_path / "d.mcap", CompressionType.NONE)
    with open(path, "rb") as fh:
        summary = make_reader(fh).get_summary()
    chunk = min(summary.chunk_indexes, key=lambda c: c.message_start_time)
    channel = next(c.id for c in summary.channels.values() if c.topic == "/a")
    at = chunk.message_index_offsets[channel]
    data = bytearray(path.read_bytes())
    data[at] = 0x06  # the MessageIndex record's opcode
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=f"{path} @ byte {at}: a MessageIndex.*found opcode 0x06"):
        McapRanges(path).read(("/a",), 0, 100)
    data[at] = 0x07
    path.write_bytes(bytes(data))
    [(log_ns, offset)] = McapRanges(path)._index(at, chunk.message_index_length)[:1].tolist()
    record = chunk.chunk_start_offset + 1 + 8 + 24 + 4 + 4 + 8 + offset  # /a's first message
    data[record] = 0x02
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=f"@ byte {record}: a Message record.*found opcode 0x02"):
        McapRanges(path).read(("/a",), log_ns, log_ns + 1)
    path.write_bytes(bytes(data[: at - 10]))  # cut short: the summary is gone
    with pytest.raises(Exception):
        McapRanges(path)
