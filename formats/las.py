"""LAS / LAZ point clouds through laspy (LAZ decompressed by the lazrs backend).

The file's layout is checked before laspy reads it: the header, every VLR and EVLR, the
point records (uncompressed: ``count * record length`` bytes must be there) and the LAZ
chunk table must lie within the file, so no count or offset from the file sizes a loop or
an allocation unchecked. LAZ points are decoded in batches of doubling size, so memory
grows only with the points the data really holds; a file with fewer points than its header declares raises.

Coordinates: laspy applies the header scale and offset to the integer X, Y, Z in float64;
the Sweep stores ``xyz`` as float32 *relative to an origin* so that no precision is lost
(float32 is ~0.06 m coarse at 6e5 m, typical of UTM eastings). The origin is a keyword:
given, it is used as is (pass your scene origin); omitted, it is :func:`las_origin`, the
minimum corner *of the points* floored to whole metres. The header's min/max bounds are
never used (writers get them wrong). Absolute float64 coordinates are
``sweep.xyz.astype(np.float64) + origin``. The frame is ``"world"``: the file's projected
CRS shifted by the origin.

Columns: ``intensity`` → ``intensity`` (float32); ``return_number`` → ``return_index``
(``return_number - 1``) when every value is ≥ 1, else it stays in ``extra``; ``red``,
``green``, ``blue`` → ``extra["rgb"]`` ``(N, 3) uint16``; every other dimension
(``classification``, ``gps_time`` in GPS seconds, extra bytes...) → ``extra`` with its dtype.

Every failure of the file (laspy's and lazrs's errors, a lazrs panic) is a
:class:`FormatError` naming the file and what was wrong.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass

import laspy
import numpy as np

from engine.sweep import Sweep
from formats.errors import FormatError, load_source
from formats.positions import check_origin, floor_origin, relative_xyz

_SKIP = {"X", "Y", "Z", "intensity", "red", "green", "blue"}
_HEADER_SIZE = {0: 227, 1: 227, 2: 227, 3: 235, 4: 375}  # least public header block per LAS 1.minor
_VLR_HEADER, _EVLR_HEADER = 54, 60
_LASZIP_VLR = (b"laszip encoded", 22204)
_FIRST_BATCH, _MAX_BATCH = 1 << 12, 1 << 20  # LAZ points decoded per step: doubling from the first to the most


@dataclass(frozen=True)
class _Layout:
    """What the header declares, checked against the file size."""

    point_count: int
    compressed: bool


def _check_layout(path: str, data: bytes) -> _Layout:
    """Check every count and offset of the header against ``len(data)``; FormatError if one is off."""
    size = len(data)
    if size < _HEADER_SIZE[0] or data[:4] != b"LASF":
        raise FormatError(path, 0, f"a LAS header ('LASF' and at least {_HEADER_SIZE[0]} bytes), file has {size} bytes")
    major, minor = data[24], data[25]
    if major != 1 or minor not in _HEADER_SIZE:
        raise FormatError(path, 24, f"LAS version 1.0 to 1.4, found {major}.{minor}")
    header_size, offset, n_vlrs, format_id, point_size, count = struct.unpack_from("<HIIBHI", data, 94)
    if not _HEADER_SIZE[minor] <= header_size <= size:
        raise FormatError(path, 94, f"a header size from {_HEADER_SIZE[minor]} (LAS 1.{minor}) to the file size "
                                    f"{size}, found {header_size}")
    if not header_size <= offset <= size:
        raise FormatError(path, 96, f"an offset to point data from the header size {header_size} to the file size "
                                    f"{size}, found {offset}")
    scales, offsets = struct.unpack_from("<3d", data, 131), struct.unpack_from("<3d", data, 155)
    if not all(math.isfinite(s) and s != 0 for s in scales) or not all(map(math.isfinite, offsets)):
        raise FormatError(path, 131, f"finite non-zero scales and finite offsets, found {scales} and {offsets}")
    vlrs = _walk_records(path, data, header_size, offset, n_vlrs, extended=False)
    points_end = size
    if minor >= 4:
        evlr_at, n_evlrs, count = struct.unpack_from("<QIQ", data, 235)
        if n_evlrs:
            if evlr_at < offset:
                raise FormatError(path, 235, f"the first EVLR after the point data at byte {offset}, found {evlr_at}")
            _walk_records(path, data, evlr_at, size, n_evlrs, extended=True)
            points_end = evlr_at
    compressed = format_id & 0xC0 == 0x80
    if not compressed:
        if count * point_size > points_end - offset:
            raise FormatError(
                path, points_end, f"{count} point records of {point_size} bytes ({count * point_size} bytes) from byte "
                f"{offset}, found {points_end - offset} bytes",
            )  # fmt: skip
    elif _LASZIP_VLR not in vlrs:
        raise FormatError(path, 104, f"a LASzip VLR ('laszip encoded', 22204) for compressed point format {format_id}")
    elif offset + 8 <= size:
        (table_at,) = struct.unpack_from("<q", data, offset)
        if offset + 8 <= table_at <= size - 8:
            (n_chunks,) = struct.unpack_from("<I", data, table_at + 4)
            if n_chunks > table_at - offset - 8:  # every chunk holds at least one byte
                raise FormatError(
                    path, table_at + 4,
                    f"at most {table_at - offset - 8} LAZ chunks (one per compressed byte), found {n_chunks}"
                )
    return _Layout(point_count=count, compressed=compressed)


def _walk_records(path: str, data: bytes, start: int, end: int, count: int, extended: bool) -> set[tuple[bytes, int]]:
    """Walk ``count`` (E)VLRs from ``start``; each must end by ``end``. Returns their (user id, record id)."""
    head = _EVLR_HEADER if extended else _VLR_HEADER
    what = "EVLR" if extended else "VLR"
    if count * head > end - start:
        raise FormatError(path, start, f"{count} {what}s of at least {head} bytes within bytes {start}..{end}")
    ids = set()
    pos = start
    for k in range(count):
        if pos + head > end:
            raise FormatError(path, pos, f"{what} {k} of {count}: a {head}-byte header before byte {end}")
        user, record_id, length = struct.unpack_from("<2x16sHQ" if extended else "<2x16sHH", data, pos)
        if pos + head + length > end:
            raise FormatError(path, pos + 20, f"{what} {k} of {count}: {length} bytes of data before byte {end}")
        ids.add((user.rstrip(b"\0"), record_id))
        pos += head + length
    return ids


def _is_failure(exc: BaseException) -> bool:
    """An exception of laspy or lazrs that means a bad file (lazrs panics are BaseExceptions)."""
    if isinstance(exc, (FormatError, MemoryError)):
        return False
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _read_record(path: str | os.PathLike) -> laspy.ScaleAwarePointRecord:
    """All point records of the file, checked as the module docstring says."""
    p = os.fspath(path)
    _, data = load_source(path)
    layout = _check_layout(p, data)
    try:
        with laspy.open(io.BytesIO(data), laz_backend=laspy.LazBackend.Lazrs) as reader:
            batch = _FIRST_BATCH if layout.compressed else layout.point_count
            parts = []
            while reader.points_read < layout.point_count:
                want = min(batch, layout.point_count - reader.points_read)
                parts.append(reader.read_points(want))
                if len(parts[-1]) < want:
                    break
                batch = min(2 * batch, _MAX_BATCH)
            n = sum(map(len, parts))
            if n < layout.point_count:
                raise FormatError(p, None, f"{layout.point_count} point records as the header declares, found {n}")
            header = reader.header
            array = np.concatenate([r.array for r in parts]) if parts else np.empty(0, header.point_format.dtype())
            return laspy.ScaleAwarePointRecord(array, header.point_format, header.scales, header.offsets)
    except BaseException as exc:
        if not _is_failure(exc):
            raise
        raise FormatError(p, None, f"a valid LAS/LAZ file ({type(exc).__name__}: {exc})") from None


def _positions(path: str, record: laspy.ScaleAwarePointRecord) -> list[np.ndarray]:
    """The scaled x, y, z of every point, ``(N,) float64`` metres each; FormatError unless finite."""
    with np.errstate(over="ignore"):
        xyz = [np.asarray(record[axis], dtype=np.float64) for axis in "xyz"]
    if not all(np.isfinite(c).all() for c in xyz):
        raise FormatError(path, 131, "scales and offsets that give finite coordinates, "
                                     f"found {record.scales} and {record.offsets}")
    return xyz


def las_origin(path: str | os.PathLike) -> np.ndarray:
    """The default origin of :func:`read_las`: the points' minimum corner floored to whole
    metres (zeros for no points), ``(3,) float64``. Reads (and for LAZ decodes) the points."""
    return floor_origin(np.stack(_positions(os.fspath(path), _read_record(path)), axis=1))


def read_las(
    path: str | os.PathLike, *, origin: np.ndarray | None = None, timestamp_ns: int = 0, drop_nan: bool = False
) -> Sweep:
    """Read a LAS or LAZ file into a Sweep with ``xyz = float32(xyz_f64 - origin)``.

    Args:
        origin: ``(3,) float64`` metres subtracted in float64; default :func:`las_origin`.
        timestamp_ns: the sweep timestamp to record.
        drop_nan: accepted for a uniform reader signature; LAS coordinates are always finite.
    """
    origin = None if origin is None else check_origin(origin)
    record = _read_record(path)
    x, y, z = _positions(os.fspath(path), record)
    if origin is None:
        origin = floor_origin(np.stack([x, y, z], axis=1))
    xyz = relative_xyz(os.fspath(path), x, y, z, origin)
    n = len(record)
    dims = list(record.point_format.dimension_names)
    extra: dict[str, np.ndarray] = {}
    core: dict[str, np.ndarray] = {"intensity": np.asarray(record["intensity"], dtype=np.float32)}
    if all(c in dims for c in ("red", "green", "blue")):
        extra["rgb"] = np.stack([np.asarray(record[c]) for c in ("red", "green", "blue")], axis=1).astype(np.uint16)
    for name in dims:
        if name in _SKIP:
            continue
        col = np.asarray(record[name])
        if name == "return_number" and (n == 0 or col.min() >= 1):
            core["return_index"] = (col - 1).astype(np.uint8)
        else:
            extra[name] = col
    sweep = Sweep(xyz=xyz, timestamp_ns=timestamp_ns, frame="world", extra=extra, **core)
    if drop_nan:
        sweep = sweep.select(np.isfinite(sweep.xyz).all(axis=1))
    return sweep
