"""Multi-channel hydrophone recordings and the raw log's description of the array.

Recordings are WAV or FLAC (through libsndfile, the ``soundfile`` binding; FLAC holds at most
8 channels, WAV any number) or Fathom raw PCM (``.pcm``, below). Samples come back as
``(C, N) float32`` in full-scale units: integer samples divided by ``2**(bits-1)``
(libsndfile's rule, so ``int16 32767`` reads as ``0.99997``), float samples as stored, each
channel then divided by its gain ``10**(gains_db / 20)`` (recorded = pressure × gain).

Sample-accurate time: sample ``k`` of a recording was taken at
``start_ns + round(k · 1e9 / sample_rate_hz)`` (:meth:`HydrophoneRecording.sample_time_ns`).
WAV and FLAC carry no start time, so the raw log states it; a ``.pcm`` header carries its own
and a stated one must agree.

Raw PCM layout (little-endian; samples interleaved, frame-major: frame 0 channels 0..C-1,
frame 1, ...)::

    offset size type     field
    0      8    bytes    magic b"FTHMPCM1"
    8      4    uint32   header_bytes (>= 40): where the samples start
    12     2    uint16   channels C (>= 1)
    14     2    uint16   sample format: 1 int16, 2 int32, 3 float32
    16     8    float64  sample_rate_hz (finite, > 0)
    24     8    int64    start_ns: time of the first sample
    32     8    uint64   frames N: samples per channel; the file is header_bytes + N·C·size long

The raw log's ``hydrophones`` entry (:func:`array_from_json`)::

    {"name": "HULL", "path": "acoustic/HULL.flac", "start_ns": 1700000000000000000,
     "sample_rate_hz": 8000.0, "gains_db": 20.0 | [g0, ..., gC-1],
     "mount": {"kind": "hull", "elements_m": [[x, y, z], ...]}
            | {"kind": "towed", "tow_point_m": [x, y, z], "cable_m": L, "depth_m": d,
               "elements_m": [s0, ..., sC-1]}}

Positions are in the vessel frame (x forward, y starboard, z down; metres from the reference
point) and converted to the ego frame (x forward, y left, z up) here. A towed line array is
modelled straight astern of its tow point at ``depth_m`` (vessel frame z): element ``k`` at
``(tow_x − cable_m − s_k, tow_y, depth_m)``; no catenary, no lag behind a turn. A line
array cannot tell port from starboard (its beams are mirror images across its axis).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from formats.errors import FormatError
from formats.rig import checked_name

PCM_MAGIC = b"FTHMPCM1"
PCM_HEADER = struct.Struct("<8sIHHdqQ")
PCM_FORMATS: dict[int, np.dtype] = {1: np.dtype("<i2"), 2: np.dtype("<i4"), 3: np.dtype("<f4")}
PCM_SCALE = {1: 2.0 ** -15, 2: 2.0 ** -31, 3: 1.0}
SOUNDFILE_SUFFIXES = (".wav", ".flac")
MOUNT_KINDS = ("hull", "towed")
_EGO_FROM_VESSEL = np.array([1.0, -1.0, -1.0])  # (fwd, stbd, down) → (fwd, left, up)


@dataclass(frozen=True)
class HydrophoneRecording:
    """``samples (C, N) float32`` (gains removed), ``sample_rate_hz``, ``start_ns`` (int64 ns of
    sample 0)."""

    samples: np.ndarray
    sample_rate_hz: float
    start_ns: int

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    def sample_time_ns(self, index: np.ndarray | int) -> np.ndarray:
        """``start_ns + round(index · 1e9 / sample_rate_hz)`` as int64 (sample index → time)."""
        return self.start_ns + np.rint(np.asarray(index, np.float64) * (1e9 / self.sample_rate_hz)).astype(np.int64)


@dataclass(frozen=True)
class ArrayMount:
    """Where the elements sit: ``kind`` "hull" (``elements_m (C, 3)`` vessel frame) or "towed"
    (``elements_m (C,)`` offsets aft along the line from its head, ``tow_point_m (3,)`` vessel
    frame, ``cable_m``, ``depth_m``)."""

    kind: str
    elements_m: np.ndarray
    tow_point_m: np.ndarray | None = None
    cable_m: float = 0.0
    depth_m: float = 0.0

    def positions_vessel(self) -> np.ndarray:
        """``(C, 3) float64`` element positions, vessel frame (x fwd, y stbd, z down), m."""
        if self.kind == "hull":
            return np.asarray(self.elements_m, np.float64)
        tow = np.asarray(self.tow_point_m, np.float64)
        s = np.asarray(self.elements_m, np.float64)
        return np.stack([tow[0] - self.cable_m - s, np.full_like(s, tow[1]), np.full_like(s, self.depth_m)], axis=1)

    def positions_ego(self) -> np.ndarray:
        """``(C, 3) float64`` element positions, ego frame (x fwd, y left, z up), m."""
        return self.positions_vessel() * _EGO_FROM_VESSEL


@dataclass(frozen=True)
class HydrophoneArray:
    """A raw log's hydrophone array: its recording ``path``, ``start_ns``, ``sample_rate_hz``,
    ``gains_db (C,) float64`` and :class:`ArrayMount`."""

    name: str
    path: Path
    start_ns: int
    sample_rate_hz: float
    gains_db: np.ndarray
    mount: ArrayMount

    @property
    def num_elements(self) -> int:
        return len(self.gains_db)

    def read(self, first: int = 0, count: int | None = None) -> HydrophoneRecording:
        """Samples ``[first, first + count)`` of the recording (all from ``first`` without a count)."""
        return read_hydrophone(self.path, start_ns=self.start_ns, sample_rate_hz=self.sample_rate_hz,
                               channels=self.num_elements, gains_db=self.gains_db, first=first, count=count)


# ---------------------------------------------------------------- reading


def read_hydrophone(path: str | os.PathLike, *, start_ns: int | None = None, sample_rate_hz: float | None = None,
                    channels: int | None = None, gains_db: np.ndarray | float | None = None, first: int = 0,
                    count: int | None = None) -> HydrophoneRecording:
    """Read samples ``[first, first + count)`` of a WAV, FLAC or raw PCM recording.

    ``start_ns`` is required for WAV/FLAC; ``sample_rate_hz`` and ``channels``, when given, must
    match the file; ``gains_db`` (scalar or per channel) is divided out. A window beyond the
    end is cut at the end. ``FormatError`` names the file and what is wrong.
    """
    path = Path(path)
    if first < 0 or (count is not None and count < 0):
        raise ValueError(f"first and count must be >= 0, got {first} and {count}")
    if path.suffix.lower() == ".pcm":
        data, fs, t0 = _read_pcm(path, first, count)
        if start_ns is not None and start_ns != t0:
            raise FormatError(path, 24, f"start_ns {start_ns} as the raw log states, the header says {t0}")
    elif path.suffix.lower() in SOUNDFILE_SUFFIXES:
        if start_ns is None:
            raise ValueError(f"{path}: a WAV/FLAC recording carries no start time; pass start_ns")
        data, fs = _read_soundfile(path, first, count)
        t0 = int(start_ns)
    else:
        raise FormatError(path, None, f"a recording ending in .pcm or one of {SOUNDFILE_SUFFIXES}")
    if sample_rate_hz is not None and float(sample_rate_hz) != fs:
        raise FormatError(path, None, f"sample rate {sample_rate_hz} Hz as the raw log states, the file has {fs} Hz")
    if channels is not None and data.shape[0] != channels:
        raise FormatError(path, None, f"{channels} channels (one per array element), the file has {data.shape[0]}")
    if not np.all(np.isfinite(data)):
        raise FormatError(path, None, "finite samples (found NaN or infinity)")
    if gains_db is not None:
        g = np.broadcast_to(np.asarray(gains_db, np.float64), (data.shape[0],))
        data *= (10.0 ** (-g / 20.0)).astype(np.float32)[:, None]
    first_ns = t0 + int(round(first * 1e9 / fs))
    return HydrophoneRecording(data, fs, first_ns)


def _read_soundfile(path: Path, first: int, count: int | None) -> tuple[np.ndarray, float]:
    import soundfile

    try:
        with soundfile.SoundFile(path) as f:
            first = min(first, f.frames)
            f.seek(first)
            n = f.frames - first if count is None else min(count, f.frames - first)
            data = f.read(n, dtype="float32", always_2d=True)
            fs = float(f.samplerate)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise FormatError(path, None, f"a WAV/FLAC recording libsndfile reads ({exc})") from None
    return np.ascontiguousarray(data.T), fs


def _read_pcm(path: Path, first: int, count: int | None) -> tuple[np.ndarray, float, int]:
    try:
        with open(path, "rb") as f:
            head = f.read(PCM_HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise FormatError(path, None, f"a readable file ({exc.strerror})") from None
    if len(head) < PCM_HEADER.size:
        raise FormatError(path, len(head), f"a {PCM_HEADER.size}-byte raw PCM header")
    magic, header_bytes, channels, code, fs, t0, frames = PCM_HEADER.unpack(head)
    if magic != PCM_MAGIC:
        raise FormatError(path, 0, f"the magic {PCM_MAGIC!r}, found {magic!r}")
    if header_bytes < PCM_HEADER.size:
        raise FormatError(path, 8, f"header_bytes >= {PCM_HEADER.size}, got {header_bytes}")
    if channels < 1:
        raise FormatError(path, 12, "at least one channel")
    if code not in PCM_FORMATS:
        raise FormatError(path, 14, f"sample format one of {sorted(PCM_FORMATS)} (int16, int32, float32), got {code}")
    if not (np.isfinite(fs) and fs > 0):
        raise FormatError(path, 16, f"a finite positive sample rate, got {fs}")
    dtype = PCM_FORMATS[code]
    frame_bytes = channels * dtype.itemsize
    if size != header_bytes + frames * frame_bytes:
        raise FormatError(path, size, f"{header_bytes} + {frames} frames × {frame_bytes} bytes = "
                                      f"{header_bytes + frames * frame_bytes} bytes, the file has {size}")
    first = min(first, frames)
    n = frames - first if count is None else min(count, frames - first)
    raw = np.fromfile(path, dtype=dtype, count=n * channels, offset=header_bytes + first * frame_bytes)
    data = np.ascontiguousarray(raw.reshape(n, channels).T, dtype=np.float32)
    if code != 3:
        data *= np.float32(PCM_SCALE[code])
    return data, float(fs), int(t0)


# ---------------------------------------------------------------- writing


def write_hydrophone(path: str | os.PathLike, samples: np.ndarray, sample_rate_hz: float, start_ns: int = 0,
                     *, pcm_format: int = 3, subtype: str | None = None) -> Path:
    """Write ``samples (C, N)`` (full-scale units) as WAV/FLAC (libsndfile ``subtype``, e.g.
    "PCM_24"; its default otherwise) or raw PCM (``pcm_format`` 1/2/3; integers saturate).
    A WAV/FLAC file does not keep ``start_ns``: the raw log states it."""
    path = Path(path)
    x = np.asarray(samples)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"samples must be (C, N) with C >= 1, got shape {x.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile

        if not float(sample_rate_hz).is_integer():
            raise ValueError(f"{path}: WAV/FLAC sample rates are whole hertz, got {sample_rate_hz}")
        soundfile.write(path, np.ascontiguousarray(x.T), int(sample_rate_hz), subtype=subtype)
        return path
    if path.suffix.lower() != ".pcm":
        raise ValueError(f"{path}: write .pcm, .wav or .flac")
    if pcm_format not in PCM_FORMATS:
        raise ValueError(f"pcm_format must be one of {sorted(PCM_FORMATS)}, got {pcm_format}")
    dtype = PCM_FORMATS[pcm_format]
    body = x.T / PCM_SCALE[pcm_format]
    if pcm_format != 3:
        info = np.iinfo(dtype)
        body = np.clip(np.rint(body), info.min, info.max)
    head = PCM_HEADER.pack(PCM_MAGIC, PCM_HEADER.size, x.shape[0], pcm_format, float(sample_rate_hz), int(start_ns),
                           x.shape[1])
    path.write_bytes(head + np.ascontiguousarray(body, dtype=dtype).tobytes())
    return path


# ---------------------------------------------------------------- the raw log's entry


def _numbers(value: Any, shape: tuple[int, ...] | None, manifest: Path, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or not np.all(np.isfinite(arr)) or (shape is not None and arr.shape != shape):
        want = "numbers" if shape is None else f"numbers of shape {shape}"
        raise FormatError(manifest, None, f"{what}: finite {want}, got {value!r}"[:300])
    return arr


def array_from_json(d: Any, root: Path, manifest: Path, what: str) -> HydrophoneArray:
    """A ``hydrophones`` entry as a :class:`HydrophoneArray` (path resolved inside ``root``)."""
    if not isinstance(d, dict):
        raise FormatError(manifest, None, f"{what}: an object {{name, path, start_ns, sample_rate_hz, mount}}")
    name = checked_name(d.get("name"), manifest, f"{what}.name")
    rel = d.get("path")
    full = (root / rel).resolve() if isinstance(rel, str) and rel else None
    if full is None or not full.is_relative_to(root):
        raise FormatError(manifest, None, f"{what}.path: a relative path inside the log directory, got {rel!r}")
    start = d.get("start_ns")
    if not isinstance(start, int) or isinstance(start, bool):
        raise FormatError(manifest, None, f"{what}.start_ns: an integer, got {start!r}")
    fs = d.get("sample_rate_hz")
    if not isinstance(fs, (int, float)) or isinstance(fs, bool) or not (np.isfinite(fs) and fs > 0):
        raise FormatError(manifest, None, f"{what}.sample_rate_hz: a finite positive number, got {fs!r}")
    mount = _mount_from_json(d.get("mount"), manifest, f"{what}.mount")
    c = len(mount.elements_m)
    if c < 1:
        raise FormatError(manifest, None, f"{what}.mount.elements_m: at least one element")
    gains = _numbers(d.get("gains_db", 0.0), None, manifest, f"{what}.gains_db")
    if gains.ndim > 1 or (gains.ndim == 1 and len(gains) != c):
        raise FormatError(manifest, None, f"{what}.gains_db: a number or {c} numbers (one per element)")
    return HydrophoneArray(name, full, int(start), float(fs), np.broadcast_to(gains, (c,)).copy(), mount)


def _mount_from_json(m: Any, manifest: Path, what: str) -> ArrayMount:
    kind = m.get("kind") if isinstance(m, dict) else None
    if kind not in MOUNT_KINDS:
        raise FormatError(manifest, None, f"{what}.kind: one of {MOUNT_KINDS}, got {kind!r}")
    elements = _numbers(m.get("elements_m"), None, manifest, f"{what}.elements_m")
    if kind == "hull":
        if elements.ndim != 2 or elements.shape[1] != 3:
            raise FormatError(manifest, None, f"{what}.elements_m: [[x, y, z], ...] per element, got shape "
                                              f"{elements.shape}")
        return ArrayMount("hull", elements)
    if elements.ndim != 1:
        raise FormatError(manifest, None, f"{what}.elements_m: offsets along the line, one number per element")
    tow = _numbers(m.get("tow_point_m"), (3,), manifest, f"{what}.tow_point_m")
    cable = float(_numbers(m.get("cable_m"), (), manifest, f"{what}.cable_m"))
    depth = float(_numbers(m.get("depth_m"), (), manifest, f"{what}.depth_m"))
    return ArrayMount("towed", elements, tow, cable, depth)


def array_to_json(a: HydrophoneArray, root: Path) -> dict[str, Any]:
    """The ``hydrophones`` entry of ``a`` (path relative to ``root``)."""
    m = a.mount
    mount: dict[str, Any] = {"kind": m.kind, "elements_m": np.asarray(m.elements_m).tolist()}
    if m.kind == "towed":
        mount.update(tow_point_m=np.asarray(m.tow_point_m).tolist(), cable_m=m.cable_m, depth_m=m.depth_m)
    rel = Path(a.path).resolve().relative_to(Path(root).resolve()) if Path(a.path).is_absolute() else Path(a.path)
    return {"name": a.name, "path": rel.as_posix(), "start_ns": int(a.start_ns),
            "sample_rate_hz": float(a.sample_rate_hz), "gains_db": np.asarray(a.gains_db).tolist(), "mount": mount}
