"""Where a message's bytes lie in an MCAP file: its chunk's message index, read by hand.

An MCAP file's summary lists its chunks (log-time span, offset, compression) and, per chunk
and channel, where that chunk's ``MessageIndex`` record lies; the record holds ``(log_time,
offset)`` pairs, the offset of each message record within the chunk's uncompressed records.
In an uncompressed chunk the message's data is then a byte range of the file::

    chunk:   opcode 0x06 (1) | length (8) | message_start_time, message_end_time,
             uncompressed_size (3 × u64) | uncompressed_crc (u32) | compression (u32 length +
             UTF-8) | records_length (u64) | records ...
    message: opcode 0x05 (1) | length (8) | channel_id (u16) | sequence (u32) | log_time,
             publish_time (2 × u64) | data (length − 22)

(little-endian; https://mcap.dev/spec). :class:`McapRanges` reads exactly those ranges, so
a frame's messages cost their own bytes, where a chunk reader copies every message of every
chunk the frame touches. Messages in compressed chunks are not located (the caller reads
those through the ``mcap`` library). Chunk CRCs are not checked here: the first pass over
the bag (``formats.ros.bag``) checked them.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from formats.errors import FormatError

_MESSAGE_INDEX = 0x07
_MESSAGE = 0x05
_RECORD = struct.Struct("<BQ")        # opcode, length
_INDEX_HEAD = struct.Struct("<BQHI")  # opcode, length, channel_id, records byte length
_MESSAGE_HEAD = 1 + 8 + 2 + 4 + 8 + 8


class McapRanges:
    """An open MCAP file and its summary: the byte ranges of messages by topic and log time."""

    def __init__(self, path: Path) -> None:
        from mcap.reader import make_reader

        self.path = path
        self._file = open(path, "rb")  # closed by close(), or when the object goes
        self.fd = self._file.fileno()
        try:
            summary = make_reader(self._file).get_summary()
        except BaseException:
            self._file.close()
            raise
        if summary is None:
            self._file.close()
            raise FormatError(path, None, "an MCAP summary (chunk index)")
        self.channels: dict[str, list[int]] = {}
        for c in summary.channels.values():
            self.channels.setdefault(c.topic, []).append(c.id)
        self.chunks = sorted(summary.chunk_indexes, key=lambda c: c.message_start_time)

    def close(self) -> None:
        self._file.close()

    def read(self, topics: tuple[str, ...], start_ns: int, stop_ns: int) -> dict[tuple[str, int], bytes] | None:
        """``{(topic, log time): data}`` of ``topics``' messages logged in ``[start_ns,
        stop_ns)``, each read as its own byte range; None where a chunk of the span holds
        messages of the topics compressed."""
        out: dict[tuple[str, int], bytes] = {}
        for chunk in self.chunks:
            if chunk.message_end_time < start_ns or chunk.message_start_time >= stop_ns:
                continue
            records = chunk.chunk_start_offset + 1 + 8 + 8 * 3 + 4 + 4 + len(chunk.compression.encode()) + 8
            for topic in topics:
                for channel in self.channels.get(topic, ()):
                    at = chunk.message_index_offsets.get(channel)
                    if at is None:
                        continue
                    if chunk.compression:  # the topic has messages in a compressed chunk of the span
                        return None
                    for log_ns, offset in self._index(at, chunk.message_index_length):
                        if start_ns <= log_ns < stop_ns:
                            out[(topic, int(log_ns))] = self._data(records + int(offset))
        return out

    def _index(self, at: int, limit: int) -> np.ndarray:
        """The ``(log_time, offset)`` pairs of the MessageIndex record at file offset ``at``."""
        head = os.pread(self.fd, _INDEX_HEAD.size, at)
        if len(head) < _INDEX_HEAD.size:
            raise FormatError(self.path, at, "a MessageIndex record (the file is shorter)")
        op, _, _, size = _INDEX_HEAD.unpack(head)
        if op != _MESSAGE_INDEX or size % 16 or size > limit:
            raise FormatError(self.path, at, f"a MessageIndex record (opcode 0x07, pairs of 16 bytes within "
                                             f"{limit}), found opcode {op:#04x} with {size} bytes")
        body = os.pread(self.fd, size, at + _INDEX_HEAD.size)
        if len(body) < size:
            raise FormatError(self.path, at, f"{size} bytes of MessageIndex pairs (the file is shorter)")
        return np.frombuffer(body, "<u8").reshape(-1, 2)

    def _data(self, at: int) -> bytes:
        """The data of the message record at file offset ``at``."""
        head = os.pread(self.fd, _RECORD.size, at)
        if len(head) < _RECORD.size:
            raise FormatError(self.path, at, "a Message record (the file is shorter)")
        op, length = _RECORD.unpack(head)
        size = length - (_MESSAGE_HEAD - 9)
        if op != _MESSAGE or size < 0 or at + _MESSAGE_HEAD + size > os.fstat(self.fd).st_size:
            raise FormatError(self.path, at, f"a Message record (opcode 0x05) inside the file, found opcode "
                                             f"{op:#04x} of {length} bytes")
        data = os.pread(self.fd, size, at + _MESSAGE_HEAD)
        if len(data) < size:
            raise FormatError(self.path, at, f"{size} bytes of message data (the file is shorter)")
        return data
