"""The serialised bytes of the large ROS messages, read without deserialising them.

``sensor_msgs/PointCloud2``, ``sensor_msgs/Image``, ``sensor_msgs/CompressedImage`` and
``velodyne_msgs/VelodyneScan`` are parsed field by field up to their ``uint8[]`` payload,
which is returned as a NumPy view of the message bytes (no copy). Two wire formats:

- ROS 1: little-endian, no alignment; ``Header`` is ``uint32 seq, time stamp, string
  frame_id``; a string is ``uint32 length`` + bytes.
- ROS 2 CDR: a 4-byte encapsulation header (``00 01`` little-endian, ``00 00`` big-endian),
  then every primitive aligned to its size relative to the end of that header; ``Header`` is
  ``Time stamp (int32 sec, uint32 nanosec), string frame_id``; a string's length counts its
  terminating NUL.

Lengths are checked against the message size before any view is made, so a corrupt length
raises :class:`MessageError` instead of allocating. The caller names the topic and message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

VELODYNE_PACKET_SIZE = 1206
# PointField datatypes (sensor_msgs/PointField): code -> NumPy kind and size
POINT_FIELD_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


class MessageError(ValueError):
    """The message bytes do not hold the expected layout (the caller adds topic and index)."""


class Cursor:
    """Reads primitives from one serialised message, ROS 1 or CDR."""

    def __init__(self, data: bytes | memoryview, ros1: bool) -> None:
        self.data = memoryview(data).cast("B")
        self.ros1 = ros1
        if ros1:
            self.pos, self.base, big = 0, 0, False
        else:
            if len(self.data) < 4 or self.data[0] != 0 or self.data[1] not in (0, 1):
                raise MessageError(f"a CDR encapsulation header 00 00 or 00 01, found {bytes(self.data[:4]).hex()}")
            self.pos, self.base, big = 4, 4, self.data[1] == 0
        self.order = ">" if big else "<"

    def _take(self, size: int, align: int) -> int:
        if not self.ros1 and align > 1:
            self.pos += -(self.pos - self.base) % align
        at = self.pos
        if at + size > len(self.data):
            raise MessageError(f"{size} more bytes at byte {at}, the message has {len(self.data)}")
        self.pos = at + size
        return at

    def u8(self) -> int:
        return self.data[self._take(1, 1)]

    def u32(self) -> int:
        return struct.unpack_from(self.order + "I", self.data, self._take(4, 4))[0]

    def time_ns(self) -> int:
        """A ``time`` / ``builtin_interfaces/Time`` as int64 ns."""
        sec, nsec = struct.unpack_from(self.order + ("II" if self.ros1 else "iI"), self.data, self._take(8, 4))
        return sec * 1_000_000_000 + nsec

    def string(self) -> str:
        n = self.u32()
        raw = bytes(self.data[self._take(n, 1):self.pos])
        if not self.ros1:
            raw = raw[:-1] if raw.endswith(b"\0") else raw
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise MessageError(f"a UTF-8 string at byte {self.pos - n}") from None

    def bytes_view(self, n: int | None = None) -> np.ndarray:
        """``(n,) uint8`` view of a ``uint8[]`` (its length read first unless ``n`` is fixed)."""
        n = self.u32() if n is None else n
        at = self._take(n, 1)
        return np.frombuffer(self.data, np.uint8, n, at)

    def header(self) -> tuple[int, str]:
        """``std_msgs/Header`` → ``(stamp ns, frame_id)``."""
        if self.ros1:
            self.u32()  # seq
        return self.time_ns(), self.string()


@dataclass(frozen=True, eq=False)
class PointCloud2:
    """A ``sensor_msgs/PointCloud2`` with its data as a view.

    Attributes:
        stamp_ns, frame_id: the header.
        height, width: the grid (``width * height`` points).
        fields: ``(name, offset, datatype, count)`` per PointField.
        big_endian, point_step, row_step, is_dense: as in the message.
        data: ``(row_step * height,) uint8`` view of the point bytes.
    """

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    fields: tuple[tuple[str, int, int, int], ...]
    big_endian: bool
    point_step: int
    row_step: int
    data: np.ndarray
    is_dense: bool


def read_pointcloud2(raw: bytes | memoryview, ros1: bool) -> PointCloud2:
    """Parse a serialised ``sensor_msgs/PointCloud2`` (its point bytes are not copied)."""
    c = Cursor(raw, ros1)
    stamp, frame = c.header()
    height, width = c.u32(), c.u32()
    n_fields = c.u32()
    if n_fields * 13 > len(c.data):
        raise MessageError(f"{n_fields} PointFields in a {len(c.data)}-byte message")
    fields = []
    for _ in range(n_fields):
        name = c.string()
        offset = c.u32()
        datatype = c.u8()
        fields.append((name, offset, datatype, c.u32()))
    big = bool(c.u8())
    point_step, row_step = c.u32(), c.u32()
    data = c.bytes_view()
    dense = bool(c.u8()) if c.pos < len(c.data) else True
    return PointCloud2(stamp, frame, height, width, tuple(fields), big, point_step, row_step, data, dense)


@dataclass(frozen=True, eq=False)
class Image:
    """A ``sensor_msgs/Image``: header, size, ``encoding``, ``big_endian``, row ``step`` and its
    pixel bytes as a view."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    encoding: str
    big_endian: bool
    step: int
    data: np.ndarray


def read_image(raw: bytes | memoryview, ros1: bool) -> Image:
    """Parse a serialised ``sensor_msgs/Image`` (pixels not copied)."""
    c = Cursor(raw, ros1)
    stamp, frame = c.header()
    height, width = c.u32(), c.u32()
    encoding = c.string()
    big = bool(c.u8())
    step = c.u32()
    return Image(stamp, frame, height, width, encoding, big, step, c.bytes_view())


@dataclass(frozen=True, eq=False)
class CompressedImage:
    """A ``sensor_msgs/CompressedImage``: header, ``format`` string and its bytes as a view."""

    stamp_ns: int
    frame_id: str
    format: str
    data: np.ndarray


def read_compressed_image(raw: bytes | memoryview, ros1: bool) -> CompressedImage:
    """Parse a serialised ``sensor_msgs/CompressedImage`` (bytes not copied)."""
    c = Cursor(raw, ros1)
    stamp, frame = c.header()
    fmt = c.string()
    return CompressedImage(stamp, frame, fmt, c.bytes_view())


@dataclass(frozen=True, eq=False)
class VelodyneScan:
    """A ``velodyne_msgs/VelodyneScan``: header, each packet's stamp ``(P,) int64`` ns and the
    ``(P, 1206) uint8`` packets as one strided view of the message bytes."""

    stamp_ns: int
    frame_id: str
    packet_stamps_ns: np.ndarray
    packets: np.ndarray


def read_velodyne_scan(raw: bytes | memoryview, ros1: bool) -> VelodyneScan:
    """Parse a serialised ``velodyne_msgs/VelodyneScan``. A packet is ``time stamp`` +
    ``uint8[1206] data``: 1214 bytes in ROS 1, 1216 in CDR (the next stamp aligns to 4)."""
    c = Cursor(raw, ros1)
    stamp, frame = c.header()
    n = c.u32()
    stride = 8 + VELODYNE_PACKET_SIZE + (0 if ros1 else 2)
    if n == 0:
        return VelodyneScan(stamp, frame, np.zeros(0, np.int64), np.zeros((0, VELODYNE_PACKET_SIZE), np.uint8))
    start = c._take(8, 4)  # the first packet's stamp, aligned
    end = start + n * stride - (stride - 8 - VELODYNE_PACKET_SIZE)
    if end > len(c.data):
        raise MessageError(f"{n} Velodyne packets of {stride} bytes from byte {start}, the message has {len(c.data)}")
    buf = np.frombuffer(c.data, np.uint8)
    packets = np.lib.stride_tricks.as_strided(buf[start + 8:], (n, VELODYNE_PACKET_SIZE), (stride, 1),
                                              writeable=False)
    words = np.lib.stride_tricks.as_strided(buf[start:], (n, 8), (stride, 1), writeable=False)
    sec_type = np.dtype(c.order + ("u4" if ros1 else "i4"))
    sec = np.ascontiguousarray(words[:, :4]).view(sec_type)[:, 0].astype(np.int64)
    nsec = np.ascontiguousarray(words[:, 4:]).view(c.order + "u4")[:, 0].astype(np.int64)
    return VelodyneScan(stamp, frame, sec * 1_000_000_000 + nsec, packets)
