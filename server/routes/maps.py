"""The scene's map (``fathom prepare --map``, :mod:`server.scene_map`): its layers' octrees
streamed as level-of-detail nodes, Potree 2 style, and as COPC.

A client reads ``GET /map`` (the layers' metadata and file URLs), then the root hierarchy
page of ``hierarchy.bin`` and, coarse to fine, the nodes it wants: each node is one byte
range of ``octree.bin`` (``Range: bytes=offset-…``; its first ``n · (3w + 4)`` bytes are the
viewer part, see :mod:`formats.octree`), or ``/nodes/LEVEL-X-Y-Z`` (the viewer part or the
whole node, optionally LZ4- or Zstandard-compressed). Files carry strong ETags (their
XXH3-128 digests); a URL with ``?v=`` equal to that digest is cacheable for a year
(``immutable``), any other answer must be revalidated (``no-cache``, 304 on a match).
"""

from __future__ import annotations

import json
import mmap
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam

from formats.errors import FormatError
from formats.octree import HIERARCHY, METADATA, OCTREE, OctreeLayer, node_sections, position_width
from server.deps import SceneDep, State, Viewer
from server.payloads import DATA_RESPONSES, Payload, respond
from server.scene_map import MAP_DIR, MAP_FORMAT, MAP_MANIFEST

router = APIRouter(prefix="/v1", tags=["maps"])
OCTET = "application/octet-stream"
IMMUTABLE = "private, max-age=31536000, immutable"
LayerParam = Annotated[Literal["lidar", "sonar"], PathParam(description="map layer")]
Version = Annotated[str | None, Query(max_length=64, description="the file's digest: cache it for good")]
FILE_RESPONSES = {200: {"content": {OCTET: {}}}, 404: {"description": "no map, layer or file"}, **DATA_RESPONSES}


@lru_cache(maxsize=64)
def _manifest(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    doc = json.loads(Path(path).read_bytes())
    if not isinstance(doc, dict) or doc.get("format") != MAP_FORMAT or not isinstance(doc.get("layers"), dict):
        raise FormatError(path, None, f'a map manifest ("format": "{MAP_FORMAT}")')
    return doc


def _map(scene) -> dict[str, Any] | None:
    """The scene's map manifest, None when it has no (complete) map."""
    path = scene.dir / MAP_DIR / MAP_MANIFEST
    try:
        st = path.stat()
    except OSError:
        return None
    try:
        return _manifest(str(path), st.st_mtime_ns, st.st_size)
    except (OSError, ValueError) as exc:
        raise FormatError(path, None, f"a readable map manifest ({exc})") from None


@lru_cache(maxsize=16)
def _layer(path: str, digest: str) -> tuple[OctreeLayer, dict[tuple[int, int, int, int], int]]:
    """The opened layer (metadata and every node entry) and each node's row by key, once per
    build (``digest``)."""
    layer = OctreeLayer.open(path)
    rows = {(int(e["level"]), int(e["x"]), int(e["y"]), int(e["z"])): k for k, e in enumerate(layer.nodes)}
    return layer, rows


def _open_layer(scene, layer: str) -> tuple[OctreeLayer, dict[str, Any], dict[tuple[int, int, int, int], int]]:
    doc = _map(scene)
    entry = None if doc is None else doc["layers"].get(layer)
    if entry is None:
        raise HTTPException(404, f"scene {scene.scene_id!r} has no {layer} map layer (prepare it with --map)")
    opened, rows = _layer(str(scene.dir / MAP_DIR / layer), entry["metadata_xxh3_128"])
    return opened, entry, rows


@lru_cache(maxsize=32)
def _mapped(path: str, size: int, mtime_ns: int) -> memoryview:
    """The file memory-mapped read-only (an empty file: empty bytes)."""
    if size == 0:
        return memoryview(b"")
    with open(path, "rb") as fh:
        return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))


def _file_payload(path: Path, size: int, digest: str, media_type: str, version: str | None) -> Payload:
    st = path.stat() if path.is_file() else None
    if st is None or st.st_size != size:
        raise FormatError(path, None if st is None else st.st_size, f"{size} bytes as the map records")
    body = _mapped(str(path), size, st.st_mtime_ns)
    cache = IMMUTABLE if version == digest else "private, no-cache"
    return Payload(body, media_type, f'"{digest}"', {"Cache-Control": cache}, compressible=False)


@router.get("/scenes/{scene_id}/map")
def get_map(_: Viewer, scene: SceneDep) -> dict[str, Any]:
    """The map's layers (none for a scene prepared without a map, or while it is rebuilt):
    each layer's octree metadata (:mod:`formats.octree`: cube, quantum, spacing, points,
    nodes, root hierarchy page, intensity mapping), what was removed and the URLs of its
    files (with ``?v=`` digests) and of its COPC file, if any."""
    doc = _map(scene) or {"layers": {}}
    base = f"/v1/scenes/{scene.scene_id}/map"
    out = {}
    for name, entry in doc["layers"].items():
        meta = _open_layer(scene, name)[0].metadata
        files = {f: f"{base}/{name}/{f}?v={meta[key]['xxh3_128']}" for f, key in ((HIERARCHY, "hierarchy"),
                                                                                    (OCTREE, "octree"))}
        copc = entry.get("copc")
        out[name] = {"metadata": meta, "removed": entry["removed"], "input_points": entry["input_points"],
                     "files": files, "nodes": f"{base}/{name}/nodes",
                     "copc": None if copc is None else f"{base}/{name}/copc?v={copc['xxh3_128']}"}
    return {"scene_id": scene.scene_id, "moving": doc.get("moving"), "layers": out}


@router.head("/scenes/{scene_id}/map/{layer}/{name}", response_class=Response, responses=FILE_RESPONSES)
@router.get("/scenes/{scene_id}/map/{layer}/{name}", response_class=Response, responses=FILE_RESPONSES)
def get_map_file(_: Viewer, scene: SceneDep, layer: LayerParam, request: Request,
                 name: Annotated[Literal["metadata.json", "hierarchy.bin", "octree.bin", "copc"], PathParam()],
                 v: Version = None) -> Response:
    """A layer's file: ``hierarchy.bin``, ``octree.bin`` (node data: fetch nodes as byte
    ranges), ``metadata.json``, or ``copc`` (the layer as a COPC LAZ file, which COPC readers
    query with byte ranges). HEAD, ``Range`` (206; 416 past the end) and ``If-None-Match``
    (304) as for frame data; never gzipped."""
    opened, entry, _ = _open_layer(scene, layer)
    root = scene.dir / MAP_DIR
    if name == "copc":
        copc = entry.get("copc")
        if copc is None:
            raise HTTPException(404, f"the {layer} layer of scene {scene.scene_id!r} was built without COPC")
        payload = _file_payload(root / copc["file"], copc["bytes"], copc["xxh3_128"], "application/vnd.laszip+copc", v)
    elif name == METADATA:
        path = root / layer / METADATA
        payload = _file_payload(path, path.stat().st_size, entry["metadata_xxh3_128"], "application/json", v)
    else:
        meta = opened.metadata["hierarchy" if name == HIERARCHY else "octree"]
        payload = _file_payload(root / layer / name, meta["bytes"], meta["xxh3_128"], OCTET, v)
    return respond(request, payload)


@router.head("/scenes/{scene_id}/map/{layer}/nodes/{key}", response_class=Response, responses=FILE_RESPONSES)
@router.get("/scenes/{scene_id}/map/{layer}/nodes/{key}", response_class=Response, responses=FILE_RESPONSES)
def get_map_node(
    _: Viewer, scene: SceneDep, layer: LayerParam, state: State, request: Request,
    key: Annotated[str, PathParam(pattern=r"^\d{1,2}-\d{1,7}-\d{1,7}-\d{1,7}$", description="LEVEL-X-Y-Z")],
    part: Annotated[Literal["viewer", "full"], Query(description="the viewer part or the whole node")] = "viewer",
    compression: Annotated[Literal["lz4", "zstd"] | None, Query(
        description="compress the body (an LZ4 frame or a Zstandard frame; X-Uncompressed-Length gives its "
                    "size)")] = None,
) -> Response:
    """One node's bytes (:mod:`formats.octree`; headers ``X-Point-Count``, ``X-Position-Bytes``
    (w), ``X-Node-Level``)."""
    opened, _, rows = _open_layer(scene, layer)
    level, x, y, z = (int(v) for v in key.split("-"))
    row = rows.get((level, x, y, z))
    if row is None:
        raise HTTPException(404, f"the {layer} map has no node {key}")
    digest = opened.metadata["octree"]["xxh3_128"]
    cache_key = ("map-node", str(opened.dir), digest, key, part, compression)

    def build() -> Payload:
        e = opened.nodes[row]
        n, w = int(e["point_count"]), position_width(int(opened.metadata["side_q"]), level)
        size = node_sections(n, w)["viewer" if part == "viewer" else "total"]
        octree = opened.dir / OCTREE
        body = bytes(_mapped(str(octree), int(opened.metadata["octree"]["bytes"]),
                             os.stat(octree).st_mtime_ns)[int(e["offset"]):int(e["offset"]) + size])
        headers = {"X-Point-Count": str(n), "X-Position-Bytes": str(w), "X-Node-Level": str(level),
                   "Cache-Control": "private, no-cache"}
        if compression is not None:
            headers.update({"X-Compression": compression, "X-Uncompressed-Length": str(len(body))})
            body = pa.compress(body, codec=compression, asbytes=True)
        etag = f'"{digest[:24]}-{key}-{part}-{compression or "raw"}"'
        return Payload(body, OCTET, etag, headers, compressible=False)

    return respond(request, state.cache.get(cache_key, build))
