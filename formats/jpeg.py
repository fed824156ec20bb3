"""JPEG images ⇄ ``(H, W, 3)`` / ``(H, W)`` uint8 arrays through libjpeg-turbo (simplejpeg,
whose wheels carry their own libjpeg-turbo: no system library is needed).

Decoding can run at a DCT scale ``(num, denom)`` ≤ 1 (libjpeg-turbo's scaling factors, e.g.
``(1, 2)``): the inverse DCT itself produces the smaller image, several times faster than a
full decode. The image is then ``ceil(W · num / denom)`` × ``ceil(H · num / denom)`` and
:func:`scaled_intrinsics` / :func:`scaled_camera` give the lens that matches it (they also
take the factors above 1, which libjpeg-turbo offers but the decoder here does not).

Before decoding, the marker segments up to the first scan (SOS) are walked so that a
broken header is reported with its byte offset. libjpeg-turbo reports corrupt or
truncated entropy-coded data only as warnings (it would return a partly grey image);
here any such warning is a :class:`FormatError` too (simplejpeg's ``strict`` mode).
"""

from __future__ import annotations

import dataclasses
import os
from math import gcd
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import simplejpeg

from engine.camera import Camera, CameraIntrinsics
from formats.errors import FormatError

Subsampling = Literal["444", "422", "420"]
Scale = tuple[int, int]

# libjpeg-turbo's DCT scaling factors (tjGetScalingFactors): m/8 for m = 1..16, reduced
SCALES = frozenset((m // gcd(m, 8), 8 // gcd(m, 8)) for m in range(1, 17))
# those the decoder produces (simplejpeg picks a factor by output size and never enlarges)
DECODE_SCALES = frozenset((num, denom) for num, denom in SCALES if num <= denom)

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_SOS = 0xDA
# frame headers: SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def _scan_header(data: bytes, path: str | os.PathLike | None) -> int:
    """Walk the marker segments; return the byte offset of the first SOS marker."""
    if data[:2] != _SOI:
        raise FormatError(path, 0, "JPEG SOI marker FF D8")
    pos = 2
    seen_frame = False
    n = len(data)
    while True:
        if pos + 2 > n:
            raise FormatError(path, pos, "a JPEG marker (file truncated before the image data)")
        if data[pos] != 0xFF:
            raise FormatError(path, pos, f"a JPEG marker FF xx, found byte {data[pos]:02X}")
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 2 > n:
            raise FormatError(path, pos, "a JPEG marker (file truncated before the image data)")
        marker = data[pos + 1]
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0x00):
            raise FormatError(path, pos, f"a JPEG header segment before the image data, found FF {marker:02X}")
        if pos + 4 > n:
            raise FormatError(path, pos + 2, "a 2-byte segment length (file truncated)")
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > n:
            raise FormatError(path, pos + 2,
                              f"a segment length within the file, got {length} at marker FF {marker:02X}")
        if marker in _SOF:
            seen_frame = True
        if marker == _SOS:
            if not seen_frame:
                raise FormatError(path, pos, "a frame header (SOF) before the scan")
            return pos
        pos += 2 + length


def _check_scale(scale: Scale, allowed: frozenset[Scale] = SCALES) -> Scale:
    try:
        num, denom = (int(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a (num, denom) pair, got {scale!r}") from None
    if (num, denom) not in allowed:
        raise ValueError(f"scale must be one of libjpeg-turbo's {sorted(allowed)}, got {scale!r}")
    return num, denom


def scaled_size(width: int, height: int, scale: Scale) -> tuple[int, int]:
    """``(width, height)`` of an image decoded at ``scale`` (libjpeg-turbo rounds up)."""
    num, denom = _check_scale(scale)
    return -(-width * num // denom), -(-height * num // denom)


def scale_pixels(uv: np.ndarray, scale: Scale) -> np.ndarray:
    """Full-size pixel coordinates ``uv`` (any shape, float) moved in place to the image
    decoded at ``scale`` = s: ``u' = s · (u + 0.5) − 0.5`` (see :func:`scaled_intrinsics`);
    returns ``uv``."""
    num, denom = _check_scale(scale)
    if num != denom:
        uv += 0.5
        uv *= num / denom
        uv -= 0.5
    return uv


def scaled_intrinsics(intrinsics: CameraIntrinsics, scale: Scale) -> CameraIntrinsics:
    """The intrinsics of the image :func:`decode_jpeg` returns at ``scale`` = num/denom = s.

    Pixel (0, 0) is the centre of the top-left pixel, so full-size pixel coordinate ``u``
    lies at ``u' = s · (u + 0.5) − 0.5`` in the scaled image (pixel edges, not centres,
    scale about the image corner). Every lens model is ``u = fx·xd + skew·yd + cx``,
    ``v = fy·yd + cy`` of distorted normalised coordinates, hence exactly: ``fx, fy, skew``
    times s, ``cx' = s (cx + 0.5) − 0.5`` (likewise cy), distortion unchanged; the size as
    :func:`scaled_size`. A point the full-size camera projects into its image lands at
    ``u'`` (float rounding aside).
    """
    if not isinstance(intrinsics, CameraIntrinsics):
        raise ValueError(f"intrinsics must be CameraIntrinsics, got {type(intrinsics).__name__}")
    num, denom = _check_scale(scale)
    s = num / denom
    width, height = scaled_size(intrinsics.width, intrinsics.height, (num, denom))
    return dataclasses.replace(
        intrinsics, width=width, height=height, fx=intrinsics.fx * s, fy=intrinsics.fy * s,
        cx=(intrinsics.cx + 0.5) * s - 0.5, cy=(intrinsics.cy + 0.5) * s - 0.5, skew=intrinsics.skew * s,
    )


def scaled_camera(camera: Camera, scale: Scale) -> tuple[Camera, int]:
    """The camera of an image decoded at ``scale`` and the offset (ns) to add to the image
    timestamp for row 0 of the scaled image.

    Global shutter: ``scaled_intrinsics``, offset 0. Rolling shutter: scaled row ``r'`` is
    full row ``(r' + 0.5)/s − 0.5``, so rows are ``row_readout_ns / s`` apart and row 0 is
    exposed ``(0.5/s − 0.5) · row_readout_ns`` after the full image's row 0 (both rounded
    to the nanosecond).
    """
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be a Camera, got {type(camera).__name__}")
    num, denom = _check_scale(scale)
    intr = scaled_intrinsics(camera.intrinsics, (num, denom))
    if camera.shutter != "rolling":
        return Camera(camera.name, intr, camera.ego_from_camera, camera.near_m), 0
    row_ns = camera.row_readout_ns
    scaled = Camera(camera.name, intr, camera.ego_from_camera, camera.near_m, "rolling",
                    max(1, round(row_ns * denom / num)))
    return scaled, round(row_ns * (denom - num) / (2 * num))


def decode_jpeg(data: bytes, path: str | os.PathLike | None = None, gray: bool = False,
                scale: Scale = (1, 1)) -> np.ndarray:
    """Decode JPEG bytes to ``(H, W, 3) uint8`` RGB (or ``(H, W) uint8`` with ``gray``).

    ``scale``: a libjpeg-turbo DCT scaling factor ``(num, denom)`` ≤ 1 (:data:`DECODE_SCALES`);
    the image is then :func:`scaled_size` and :func:`scaled_intrinsics` gives its lens.
    ``path`` only names the source in errors. Raises :class:`FormatError` on a broken header
    (with its byte offset), truncated or corrupt image data; ``ValueError`` on an unsupported
    scale.
    """
    factor = _check_scale(scale, DECODE_SCALES)
    data = bytes(data)
    sos = _scan_header(data, path)
    if data.rfind(_EOI) < sos:
        raise FormatError(path, len(data), "JPEG EOI marker FF D9 after the image data (file truncated)")
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        # asked for exactly this size, simplejpeg passes it on to libjpeg-turbo, which decodes
        # at the largest factor giving that size (the requested one unless the image is under
        # 8 pixels both ways), as it did for PyTurboJPEG
        size = scaled_size(width, height, factor)
        image = simplejpeg.decode_jpeg(data, colorspace="gray" if gray else "rgb", fastdct=False,
                                       fastupsample=False, min_width=size[0], min_height=size[1], strict=True)
    except ValueError as exc:
        raise FormatError(path, sos, f"valid JPEG image data ({exc})") from None
    if image.shape[:2] != size[::-1] or 0 in size:
        raise FormatError(path, sos, f"a non-empty {size[0]}×{size[1]} image, decoded shape {image.shape}")
    return image[:, :, 0] if gray else image


def read_jpeg(path: str | os.PathLike, gray: bool = False, scale: Scale = (1, 1)) -> np.ndarray:
    """Read a JPEG file; see :func:`decode_jpeg`."""
    return decode_jpeg(Path(path).read_bytes(), path, gray, scale)


def encode_jpeg(image: np.ndarray, quality: int = 90, subsampling: Subsampling = "420") -> bytes:
    """Encode ``(H, W, 3) uint8`` RGB or ``(H, W) uint8`` gray to JPEG bytes.

    ``quality`` 1..100; ``subsampling`` of the chroma planes (ignored for gray).
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image must have shape (H, W, 3) or (H, W) with H, W > 0, got {img.shape}")
    if not (1 <= int(quality) <= 100):
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if subsampling not in get_args(Subsampling):
        raise ValueError(f"subsampling must be one of {sorted(get_args(Subsampling))}, got {subsampling!r}")
    if img.ndim == 2:
        return simplejpeg.encode_jpeg(np.ascontiguousarray(img[:, :, None]), quality=int(quality),
                                      colorspace="gray", colorsubsampling="gray")
    return simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=int(quality), colorspace="rgb",
                                  colorsubsampling=subsampling)


def write_jpeg(path: str | os.PathLike, image: np.ndarray, quality: int = 90, subsampling: Subsampling = "420") -> None:
    """Encode ``image`` (see :func:`encode_jpeg`) and write it to ``path``."""
    Path(path).write_bytes(encode_jpeg(image, quality, subsampling))
