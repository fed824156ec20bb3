"""Response bodies built once and cached: frame points as Arrow streams or raw float32.

A :class:`Payload` is the serialised body plus a strong ETag derived from what it was made
of (the stored files' digests and the request options), so a revalidation (``If-None-Match``)
never needs the body. :class:`PayloadCache` keeps recently served bodies (LRU by bytes);
:func:`respond` answers 304 on a matching ETag, 206 to a byte range, and gzips when the client
accepts it.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from fastapi import Request, Response

from formats.scene_store import QUANTISED_COLUMNS, XYZ_COLUMNS, Scene, arrow_array, positions
from server.byte_ranges import UNSATISFIABLE, byte_range, if_range_holds
from server.responses import errors
from server.store_errors import DAMAGED

ARROW_STREAM = "application/vnd.apache.arrow.stream"
RAW_XYZ = "application/octet-stream"
PointFormat = Literal["arrow", "raw"]
PointFrame = Literal["world", "ego"]
Compression = Literal["lz4", "zstd"]  # Arrow IPC buffer compression (LZ4 frame, Zstandard)
# OpenAPI ``responses`` of a route answered by :func:`respond`, besides 200
DATA_RESPONSES: dict[int | str, dict] = {
    206: {"description": "the byte range asked (Range: bytes=a-b, a- or -n; If-Range honoured) of the unencoded "
                         "body, Content-Range says which"},
    304: {"description": "not modified (If-None-Match)"},
    416: {"description": "the Range starts past the end of the body (Content-Range: bytes */size)"},
    **errors((500, DAMAGED)),
}


@dataclass(frozen=True)
class Payload:
    """A response body (bytes-like), its media type, its strong ETag and extra headers."""

    body: bytes | memoryview
    media_type: str
    etag: str
    headers: dict[str, str] = field(default_factory=dict)
    compressible: bool = True

    @property
    def size(self) -> int:
        return memoryview(self.body).nbytes


class PayloadCache:
    """Thread-safe LRU of payloads bounded by total body bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Payload] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def peek(self, key: tuple) -> Payload | None:
        """The cached payload (marked recently used), or None."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def get(self, key: tuple, build: Callable[[], Payload]) -> Payload:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        value = build()  # outside the lock: two racing builds make equal payloads
        if value.size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self._bytes += value.size
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.size
        return value


def _etag(*parts: object) -> str:
    return '"' + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32] + '"'


def point_fields(scene: Scene, index: int, fields: list[str] | None, frame: PointFrame) -> list[str]:
    """The columns to send: ``fields`` checked against ``x y z`` and the stored schema (every
    level of detail has the full table's), or the default (``x y z`` and every stored column
    except the quantised ones). ValueError names a bad field."""
    names = [*XYZ_COLUMNS, *scene.stored_points(index).schema.names]
    if fields is None:
        return [n for n in names if n not in QUANTISED_COLUMNS]
    for f in fields:
        if f not in names:
            raise ValueError(f"unknown field {f!r}; this frame has {names}")
        if frame == "ego" and f in QUANTISED_COLUMNS:
            raise ValueError(f"quantised field {f!r} exists only in the world frame")
    if len(set(fields)) != len(fields):
        raise ValueError(f"fields repeat a name: {fields}")
    return fields


def _xyz_rows(scene: Scene, index: int, table: pa.Table, frame: PointFrame) -> np.ndarray:
    """``(3, N) float32`` rows x, y, z of a stored table's positions in the world frame (the
    float32 nearest to ``offset + q * scale``) or in the ego frame of frame ``index`` (the
    float32 nearest to that float64 position moved to the ego frame)."""
    if frame == "world":
        return positions(table, np.float32).T
    ego = scene.frame(index).world_from_ego.inverse().apply(positions(table))
    return np.ascontiguousarray(ego.T, dtype=np.float32)


def points_payload(scene: Scene, index: int, lod: int, fields: list[str], frame: PointFrame,
                   fmt: PointFormat, compression: Compression | None = None) -> Payload:
    """Serialise frame ``index`` (level ``lod``) from the memory-mapped store.

    ``arrow``: an Arrow IPC stream of ``fields`` (``x y z`` float32 computed from the quantised
    positions, the other columns as stored; schema metadata: the store's quantisation,
    ``fathom.frame``, ``fathom.timestamp_ns``, ``fathom.frame_index``), its buffers compressed
    with ``compression`` (Arrow IPC LZ4 frame or Zstandard, which Arrow readers undo
    themselves; such a payload is not gzipped on top). ``raw``: little-endian float32 ``x y z``
    interleaved, ``N × 12`` bytes (``fields`` and ``compression`` ignored).
    """
    entry = scene.frame(index)
    table = scene.stored_points(index, lod)
    n = table.num_rows
    etag = _etag(scene.points_version(index, lod), lod, frame, fmt,
                 ",".join(fields) if fmt == "arrow" else "xyz", compression if fmt == "arrow" else None)
    headers = {"X-Point-Count": str(n), "X-Frame": frame, "X-Timestamp-Ns": str(entry.timestamp_ns)}
    if fmt == "raw":
        rows = _xyz_rows(scene, index, table, frame)
        return Payload(np.ascontiguousarray(rows.T, dtype="<f4").tobytes(), RAW_XYZ, etag, headers)
    rows = _xyz_rows(scene, index, table, frame) if set(fields) & set(XYZ_COLUMNS) else None
    columns = [arrow_array(rows[XYZ_COLUMNS.index(f)], pa.float32()) if f in XYZ_COLUMNS else table.column(f)
               for f in fields]
    metadata = dict(table.schema.metadata or {})
    metadata.update({b"fathom.frame": frame.encode(), b"fathom.timestamp_ns": str(entry.timestamp_ns).encode(),
                     b"fathom.frame_index": str(index).encode()})
    schema = pa.schema([pa.field(f, c.type, nullable=False) for f, c in zip(fields, columns)], metadata=metadata)
    out = pa.Table.from_arrays(columns, schema=schema)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, schema, options=ipc.IpcWriteOptions(compression=compression)) as writer:
        writer.write_table(out, max_chunksize=max(n, 1))
    return Payload(memoryview(sink.getvalue()), ARROW_STREAM, etag, headers, compressible=compression is None)


def accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def respond(request: Request, payload: Payload, cache: PayloadCache | None = None, gzip_level: int = 1,
            key: tuple | None = None) -> Response:
    """The answer to a GET or HEAD of ``payload``.

    304 if ``If-None-Match`` matches. A GET with a single byte ``Range`` (and an ``If-Range``
    naming this ETag, if any) gets 206 with that part of the unencoded payload (a range
    request is never gzipped: the offsets are the payload's own) or 416 with
    ``Content-Range: bytes */size``. Otherwise the whole body, gzipped (ETag suffixed ``-gz``)
    when the client accepts gzip and the payload is compressible. HEAD gets the headers a
    GET would (``Content-Length`` included) and no body; it ignores ``Range``.
    """
    span = None
    if request.method == "GET" and "range" in request.headers and if_range_holds(
            request.headers.get("if-range"), payload.etag):
        span = byte_range(request.headers["range"], payload.size)
    if span is None and payload.compressible and accepts_gzip(request):
        plain = payload
        gz_etag = plain.etag[:-1] + '-gz"'

        def build() -> Payload:
            body = gzip.compress(plain.body, compresslevel=gzip_level, mtime=0)
            return Payload(body, plain.media_type, gz_etag, dict(plain.headers, **{"Content-Encoding": "gzip"}))

        payload = cache.get(key + ("gzip",), build) if cache is not None and key is not None else build()
    headers = {"ETag": payload.etag, "Vary": "Accept-Encoding, Authorization",
               "Cache-Control": "private, no-cache", "Accept-Ranges": "bytes"}
    if _matches(request, payload.etag):
        return Response(status_code=304, headers=headers)
    headers.update(payload.headers)
    if span == UNSATISFIABLE:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{payload.size}"})
    if span is not None:
        first, last = span
        return Response(memoryview(payload.body)[first:last + 1], status_code=206, media_type=payload.media_type,
                        headers={**headers, "Content-Range": f"bytes {first}-{last}/{payload.size}"})
    if request.method == "HEAD":
        return Response(media_type=payload.media_type, headers={**headers, "Content-Length": str(payload.size)})
    return Response(payload.body, media_type=payload.media_type, headers=headers)
