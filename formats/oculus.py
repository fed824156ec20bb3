"""Blueprint Subsea Oculus forward-looking sonar: ``SimplePingResult`` messages (version 1).

A message is the 16-byte ``OculusMessageHeader`` (id ``0x4f53``, message id 35 for a simple
ping result), the ``OculusSimpleFireMessage`` settings, the ping result fields, the bearing
table (``int16`` in 0.01°, one per beam) and, at ``imageOffset``, the polar image: rows are
range bins, columns beams, 8 or 16 bits per pixel; when the fire flags ask for gain
(bit 2) every row starts with a 4-byte gain, read here as ``float32``. All structs are
packed little-endian, as in Blueprint's ``Oculus.h``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from engine.georeference import fls_image_to_points
from engine.se3 import SE3
from engine.sweep import Sweep
from formats.errors import FormatError, load_source

PathLike = str | os.PathLike
OCULUS_ID = 0x4F53
MSG_SIMPLE_PING_RESULT = 35
FLAG_GAIN_SENT = 0x04
_HEADER = struct.Struct("<HHHHHIH")  # oculusId, src, dst, msgId, msgVersion, payloadSize, spare
_FIRE = struct.Struct("<5B4d")  # masterMode, pingRate, networkSpeed, gammaCorrection, flags, range, gain, sos, salinity
_PING = struct.Struct("<II4dIBdHHIII")  # pingId .. messageSize
_BYTES_PER_PIXEL = {0: 1, 1: 2}  # dataSize: 8 bit, 16 bit (24/32-bit images are not produced by SimplePing)


@dataclass
class OculusPing:
    """One decoded ``SimplePingResult``.

    ``image (R, B)`` uint8 or uint16 (rows = range bins, bin r at ``r × range_resolution_m``),
    ``bearings_deg (B,) float32`` (positive to starboard), ``row_gain (R,) float32`` or None,
    and the header values named as in ``Oculus.h``, converted to SI where noted.
    """

    ping_id: int
    status: int
    master_mode: int
    flags: int
    range_m: float
    gain_percent: float
    frequency_hz: float
    speed_of_sound_m_s: float
    range_resolution_m: float
    ping_start_time: int
    bearings_deg: np.ndarray
    image: np.ndarray
    row_gain: np.ndarray | None
    source_device: int = 0


def _decode(buf: bytes, o: int, path) -> tuple[OculusPing, int]:
    end = len(buf)
    if o + _HEADER.size > end:
        raise FormatError(path, o, f"a {_HEADER.size}-byte Oculus message header, found {end - o} bytes")
    oid, src, _, msg_id, version, payload, _ = _HEADER.unpack_from(buf, o)
    if oid != OCULUS_ID:
        raise FormatError(path, o, f"Oculus id 0x4f53, found {oid:#06x}")
    if msg_id != MSG_SIMPLE_PING_RESULT:
        raise FormatError(path, o + 6, f"a SimplePingResult (message id {MSG_SIMPLE_PING_RESULT}), found {msg_id}")
    if version not in (0, 1):
        raise FormatError(path, o + 8, f"SimplePingResult version 0/1, found {version} (version 2 is not supported)")
    msg_end = o + _HEADER.size + payload
    if msg_end > end:
        raise FormatError(path, o + 10, f"a payload of {payload} bytes, the data ends after {end - o - _HEADER.size}")
    f = o + _HEADER.size
    p = f + _FIRE.size
    if p + _PING.size > msg_end:
        raise FormatError(path, f, f"fire message and ping fields ({_FIRE.size + _PING.size} bytes) in the payload")
    mode, _, _, _, flags, range_m, gain, _, _ = _FIRE.unpack_from(buf, f)
    (ping_id, status, freq, _, _, sos, start_time, data_size, res, n_ranges, n_beams,
     img_off, img_size, msg_size) = _PING.unpack_from(buf, p)
    bpp = _BYTES_PER_PIXEL.get(data_size)
    if bpp is None:
        raise FormatError(path, p + 44, f"dataSize 0 (8 bit) or 1 (16 bit), found {data_size}")
    bearings_at = p + _PING.size
    if bearings_at + 2 * n_beams > msg_end:
        raise FormatError(path, bearings_at, f"a bearing table of {n_beams} int16 inside the message")
    gain_bytes = 4 if flags & FLAG_GAIN_SENT else 0
    stride = n_beams * bpp + gain_bytes
    if img_size != stride * n_ranges:
        raise FormatError(path, p + 62, f"imageSize {stride * n_ranges} for {n_ranges} x {n_beams} x {bpp} bytes "
                                        f"(+{gain_bytes} gain bytes a row), found {img_size}")
    if not (0 < res < 1e3):
        raise FormatError(path, p + 45, f"a positive range resolution, found {res}")
    if o + img_off < bearings_at + 2 * n_beams or o + img_off + img_size > msg_end:
        raise FormatError(path, p + 58, f"an image of {img_size} bytes inside the message, found imageOffset {img_off}")
    bearings = np.frombuffer(buf, "<i2", n_beams, bearings_at).astype(np.float32) * np.float32(0.01)
    rows = np.frombuffer(buf, np.uint8, img_size, o + img_off).reshape(n_ranges, stride)
    pix = rows[:, gain_bytes:]
    image = np.ascontiguousarray(pix).view("<u2" if bpp == 2 else np.uint8).reshape(n_ranges, n_beams)
    if bpp == 2:
        image = image.astype(np.uint16)
    row_gain = (np.ascontiguousarray(rows[:, :4]).view("<f4").reshape(n_ranges).astype(np.float32) if gain_bytes
                else None)
    ping = OculusPing(
        ping_id=ping_id, status=status, master_mode=mode, flags=flags, range_m=range_m, gain_percent=gain,
        frequency_hz=freq, speed_of_sound_m_s=sos, range_resolution_m=res, ping_start_time=start_time,
        bearings_deg=bearings, image=image, row_gain=row_gain, source_device=src,
    )
    return ping, msg_end


def read_oculus_pings(source: PathLike | bytes) -> list[OculusPing]:
    """All ``SimplePingResult`` messages stored back to back in a file (or bytes)."""
    path, buf = load_source(source)
    if not buf:
        raise FormatError(path, 0, "at least one Oculus message, found an empty input")
    out = []
    o = 0
    while o < len(buf):
        ping, o = _decode(buf, o, path)
        out.append(ping)
    return out


def ping_to_sweep(ping: OculusPing, threshold: float, ego_from_sonar: SE3 | None = None,
                  timestamp_ns: int = 0) -> Sweep:
    """Pixels ``>= threshold`` as points on the beams' centre plane.

    In the sonar frame (x boresight, y left, z up) unless ``ego_from_sonar`` is given, then
    in the ego frame. Columns: ``intensity`` the pixel value; extras ``range_m``,
    ``bearing_deg``, ``range_bin`` and ``beam`` (int32).
    """
    xyz, intensity, row, col = fls_image_to_points(ping.image, ping.bearings_deg, ping.range_resolution_m, threshold)
    frame = "sonar"
    if ego_from_sonar is not None:
        xyz = ego_from_sonar.apply(xyz.astype(np.float64))
        frame = "ego"
    return Sweep(
        xyz=xyz, timestamp_ns=timestamp_ns, intensity=intensity, frame=frame,
        time_offset_ns=np.zeros(len(row), np.int64),
        extra={"range_m": (row * ping.range_resolution_m).astype(np.float32),
               "bearing_deg": ping.bearings_deg[col], "range_bin": row, "beam": col},
    )
