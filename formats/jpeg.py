"""JPEG images ⇄ ``(H, W, 3)`` / ``(H, W)`` uint8 arrays through libjpeg-turbo (PyTurboJPEG).

Before decoding, the marker segments up to the first scan (SOS) are walked so that a
broken header is reported with its byte offset. libjpeg-turbo reports corrupt or
truncated entropy-coded data only as warnings (it would return a partly grey image);
here any such warning is a :class:`FormatError` too.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from formats.errors import FormatError

Subsampling = Literal["444", "422", "420"]

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


def decode_jpeg(data: bytes, path: str | os.PathLike | None = None, gray: bool = False) -> np.ndarray:
    """Decode JPEG bytes to ``(H, W, 3) uint8`` RGB (or ``(H, W) uint8`` with ``gray``).

    ``path`` only names the source in errors. Raises :class:`FormatError` on a broken
    header (with its byte offset), truncated or corrupt image data.
    """
    from turbojpeg import TJPF_GRAY, TJPF_RGB

    data = bytes(data)
    sos = _scan_header(data, path)
    if data.rfind(_EOI) < sos:
        raise FormatError(path, len(data), "JPEG EOI marker FF D9 after the image data (file truncated)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = _turbo().decode(data, pixel_format=TJPF_GRAY if gray else TJPF_RGB)
        except OSError as exc:
            raise FormatError(path, sos, f"decodable JPEG image data ({exc})") from None
    problems = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if problems:
        raise FormatError(path, sos, f"valid JPEG image data ({'; '.join(problems)})")
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise FormatError(path, sos, f"a non-empty image, decoded shape {image.shape}")
    return image[:, :, 0] if gray else image


def read_jpeg(path: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """Read a JPEG file; see :func:`decode_jpeg`."""
    return decode_jpeg(Path(path).read_bytes(), path, gray)


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
