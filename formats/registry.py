"""Maps a format name or file suffix to its point-cloud reader.

Readers are named as ``"module:function"`` and imported on first use, so reading a PCD
never imports laspy. Each reader takes a path and keyword options (``timestamp_ns``,
``drop_nan``; ``origin`` for the formats whose positions can exceed float32: PCD, PLY,
LAS/LAZ) and returns a :class:`engine.sweep.Sweep`. A file that is missing, unreadable
or damaged raises :class:`FormatError` naming it, whatever its format.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.sweep import Sweep
from formats.errors import FormatError

# name -> (reader "module:function", suffixes); longer suffixes are tried first.
READERS: dict[str, tuple[str, tuple[str, ...]]] = {}


def register(name: str, reader: str, suffixes: tuple[str, ...]) -> None:
    """Add a reader. ``reader`` is ``"formats.module:function"``."""
    READERS[name] = (reader, tuple(s.lower() for s in suffixes))


def _resolve(spec: str) -> Callable[..., Sweep]:
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def format_for(path: str | os.PathLike) -> str:
    """The registered format name for ``path``'s suffix; ``FormatError`` if none matches."""
    name = Path(path).name.lower()
    best = max(
        ((len(sfx), fmt) for fmt, (_, sfxs) in READERS.items() for sfx in sfxs if name.endswith(sfx)),
        default=None,
    )
    if best is None:
        known = sorted({s for _, sfxs in READERS.values() for s in sfxs})
        raise FormatError(path, None, f"a known point-cloud suffix ({', '.join(known)})")
    return best[1]


def read_points(path: str | os.PathLike, format: str | None = None, **options: Any) -> Sweep:
    """Read one sweep from ``path``; the format comes from the suffix unless named."""
    fmt = format or format_for(path)
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(READERS)}")
    return _resolve(READERS[fmt][0])(path, **options)


register("kitti", "formats.kitti:read_kitti_bin", (".bin",))
register("nuscenes", "formats.nuscenes:read_nuscenes_pcd_bin", (".pcd.bin",))
register("pcd", "formats.pcd:read_pcd", (".pcd",))
register("ply", "formats.ply:read_ply", (".ply",))
register("las", "formats.las:read_las", (".las", ".laz"))
register("av2", "formats.av2:read_av2_sweep", (".feather",))
register("velodyne_pcap", "formats.velodyne:read_velodyne_sweep", (".pcap",))
register("gsf", "formats.gsf:read_gsf_sweep", (".gsf",))
