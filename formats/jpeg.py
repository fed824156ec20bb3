"""JPEG images ⇄ ``(H, W, 3)`` / ``(H, W)`` uint8 arrays through libjpeg-turbo (PyTurboJPEG).

Decoding can run at a DCT scale ``(num, denom)`` (libjpeg-turbo's scaling factors, e.g.
``(1, 2)``): the inverse DCT itself produces the smaller image, several times faster than a
full decode. The image is then ``ceil(W · num / denom)`` × ``ceil(H · num / denom)`` and
:func:`scaled_intrinsics` / :func:`scaled_camera` give the lens that matches it.

Before decoding, the marker segments up to the first scan (SOS) are walked so that a
broken header is reported with its byte offset. libjpeg-turbo reports corrupt or
truncated entropy-coded data only as warnings (it would return a partly grey image);
here any such warning is a :class:`FormatError` too.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from engine.camera import Camera, CameraIntrinsics
from formats.errors import FormatError

Subsampling = Literal["444", "422", "420"]
Scale = tuple[int, int]

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_SOS = 0xDA
# frame headers: SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


@lru_cache(maxsize=1)
def _turbo():
    from turbojpeg import TurboJPEG

    return TurboJPEG()


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
            raise FormatError(path, pos + 2, f"a segment length within the file, got {length} at marker FF {marker:02X}")
        if marker in _SOF:
            seen_frame = True
        if marker == _SOS:
            if not seen_frame:
                raise FormatError(path, pos, "a frame header (SOF) before the scan")
            return pos
        pos += 2 + length


def _check_scale(scale: Scale) -> Scale:
    try:
        num, denom = (int(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a (num, denom) pair, got {scale!r}") from None
    allowed = sorted(_turbo().scaling_factors)
    if (num, denom) not in allowed:
        raise ValueError(f"scale must be one of libjpeg-turbo's {allowed}, got {scale!r}")
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

    ``scale``: a libjpeg-turbo DCT scaling factor ``(num, denom)``; the image is then
    :func:`scaled_size` and :func:`scaled_intrinsics` gives its lens. ``path`` only names
    the source in errors. Raises :class:`FormatError` on a broken header (with its byte
    offset), truncated or corrupt image data; ``ValueError`` on an unsupported scale.
    """
    from turbojpeg import TJPF_GRAY, TJPF_RGB

    factor = _check_scale(scale)
    data = bytes(data)
    sos = _scan_header(data, path)
    if data.rfind(_EOI) < sos:
        raise FormatError(path, len(data), "JPEG EOI marker FF D9 after the image data (file truncated)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = _turbo().decode(data, pixel_format=TJPF_GRAY if gray else TJPF_RGB,
                                    scaling_factor=None if factor == (1, 1) else factor)
        except OSError as exc:
            raise FormatError(path, sos, f"decodable JPEG image data ({exc})") from None
    problems = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if problems:
        raise FormatError(path, sos, f"valid JPEG image data ({'; '.join(problems)})")
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise FormatError(path, sos, f"a non-empty image, decoded shape {image.shape}")
    return image[:, :, 0] if gray else image


def read_jpeg(path: str | os.PathLike, gray: bool = False, scale: Scale = (1, 1)) -> np.ndarray:
    """Read a JPEG file; see :func:`decode_jpeg`."""
    return decode_jpeg(Path(path).read_bytes(), path, gray, scale)


def encode_jpeg(image: np.ndarray, quality: int = 90, subsampling: Subsampling = "420") -> bytes:
    """Encode ``(H, W, 3) uint8`` RGB or ``(H, W) uint8`` gray to JPEG bytes.

    ``quality`` 1..100; ``subsampling`` of the chroma planes (ignored for gray).
    """
    from turbojpeg import TJPF_GRAY, TJPF_RGB, TJSAMP_420, TJSAMP_422, TJSAMP_444, TJSAMP_GRAY

    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image must have shape (H, W, 3) or (H, W) with H, W > 0, got {img.shape}")
    if not (1 <= int(quality) <= 100):
        raise ValueError(f"quality must be in 1..100, got {quality}")
    samp = {"444": TJSAMP_444, "422": TJSAMP_422, "420": TJSAMP_420}
    if subsampling not in samp:
        raise ValueError(f"subsampling must be one of {sorted(samp)}, got {subsampling!r}")
    if img.ndim == 2:
        return _turbo().encode(
            np.ascontiguousarray(img[:, :, None]), quality=int(quality), pixel_format=TJPF_GRAY,
            jpeg_subsample=TJSAMP_GRAY,
        )
    return _turbo().encode(
        np.ascontiguousarray(img), quality=int(quality), pixel_format=TJPF_RGB, jpeg_subsample=samp[subsampling]
    )


def write_jpeg(path: str | os.PathLike, image: np.ndarray, quality: int = 90, subsampling: Subsampling = "420") -> None:
    """Encode ``image`` (see :func:`encode_jpeg`) and write it to ``path``."""
    Path(path).write_bytes(encode_jpeg(image, quality, subsampling))
