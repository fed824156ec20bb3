"""Camera messages: ``sensor_msgs/Image`` → RGB pixels, ``sensor_msgs/CompressedImage`` → its
JPEG bytes as they are, ``sensor_msgs/CameraInfo`` → :class:`~engine.camera.CameraIntrinsics`.

Image encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` (alpha dropped), ``mono8`` (gray)
and the 8-bit Bayer mosaics ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``,
``bayer_grbg8``, demosaiced bilinearly (:func:`debayer`). Others (16-bit, YUV, depth) are
refused by name.

CameraInfo lens models (``distortion_model``, ``D``):

- ``plumb_bob`` (k1 k2 p1 p2 k3) and ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6):
  Brown-Conrady, OpenCV's order (``engine.camera`` takes all eight).
- ``equidistant`` (alias ``fisheye``; k1 k2 k3 k4): Kannala-Brandt (OpenCV fisheye).
- ``D`` all zero (any model, or empty): a rectified image, pinhole from ``K``.
- a rectified topic (``image_rect``/``image_rect_color`` in its name) is pinhole from ``P``
  whatever ``D`` says (image_proc publishes the raw camera's CameraInfo beside it).
Other models, binning and a region of interest are refused by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.camera import CameraIntrinsics, LensModel
from formats.ros.wire import CompressedImage, Image, MessageError

BAYER = {"bayer_rggb8": "RGGB", "bayer_bggr8": "BGGR", "bayer_gbrg8": "GBRG", "bayer_grbg8": "GRBG"}
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, **dict.fromkeys(BAYER, 1)}
ENCODINGS = tuple(_CHANNELS)
_BROWN = {"plumb_bob": 5, "rational_polynomial": 8}
_KANNALA = ("equidistant", "fisheye")
_JPEG_FORMATS = ("jpeg", "jpg")


def image_pixels(msg: Image) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB, or ``(H, W) uint8`` for ``mono8``; MessageError for another
    encoding or a row ``step`` / data size that does not fit."""
    enc = msg.encoding.lower()
    if enc not in _CHANNELS:
        raise MessageError(f"an image encoding Fathom reads ({', '.join(ENCODINGS)}), found {msg.encoding!r}")
    ch = _CHANNELS[enc]
    h, w = msg.height, msg.width
    if h == 0 or w == 0:
        raise MessageError(f"a non-empty image, found {w}x{h}")
    if msg.step < w * ch or len(msg.data) < msg.step * (h - 1) + w * ch:
        raise MessageError(f"{h} rows of step {msg.step} >= {w} x {ch} bytes, found {len(msg.data)} bytes")
    rows = np.ndarray((h, w, ch), np.uint8, msg.data, 0, (msg.step, ch, 1))
    if enc in BAYER:
        return debayer(rows[:, :, 0], BAYER[enc])
    if enc == "mono8":
        return np.ascontiguousarray(rows[:, :, 0])
    rgb = rows[:, :, 2::-1] if enc.startswith("bgr") else rows[:, :, :3]
    return np.ascontiguousarray(rgb)


def debayer(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Bilinear demosaic of an ``(H, W) uint8`` Bayer mosaic (``pattern`` the colours of the
    top-left 2x2 block read row by row, e.g. ``"RGGB"``) → ``(H, W, 3) uint8`` RGB.

    Each channel keeps its own samples; a missing green is the mean of its 4 neighbours, a
    missing red/blue the mean of its 2 (same row or column) or 4 (diagonal) neighbours of that
    colour. Borders mirror the image (``numpy.pad`` ``"reflect"``, which keeps the mosaic's
    parity). Means round half up (``(sum + n/2) // n``)."""
    if raw.ndim != 2 or raw.shape[0] < 2 or raw.shape[1] < 2:
        raise MessageError(f"a Bayer image of at least 2x2 pixels, found shape {raw.shape}")
    if sorted(pattern) != ["B", "G", "G", "R"]:
        raise ValueError(f"a Bayer pattern of one R, two G and one B, got {pattern!r}")
    h, w = raw.shape
    pad = np.pad(raw.astype(np.uint16), 1, mode="reflect")
    rows = np.arange(h)[:, None] % 2
    cols = np.arange(w)[None, :] % 2
    where = {c: np.zeros((h, w), bool) for c in "RGB"}
    for k, c in enumerate(pattern):
        where[c] |= (rows == k // 2) & (cols == k % 2)
    at = lambda dy, dx: pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    cross = at(-1, 0) + at(1, 0) + at(0, -1) + at(0, 1)
    diag = at(-1, -1) + at(-1, 1) + at(1, -1) + at(1, 1)
    horiz, vert = at(0, -1) + at(0, 1), at(-1, 0) + at(1, 0)
    out = np.empty((h, w, 3), np.uint8)
    out[:, :, 1] = np.where(where["G"], raw, (cross + 2) // 4)
    for k, c in ((0, "R"), (2, "B")):
        in_c_row = rows == pattern.index(c) // 2  # a green between two c samples of its row
        between = np.where(in_c_row, (horiz + 1) // 2, (vert + 1) // 2)
        out[:, :, k] = np.where(where[c], raw, np.where(where["G"], between, (diag + 2) // 4))
    return out


def compressed_jpeg(msg: CompressedImage) -> bytes:
    """The JPEG bytes of a CompressedImage (``format`` ``jpeg`` or ``"<encoding>; jpeg
    compressed <encoding>"`` as image_transport writes it); MessageError for PNG and others."""
    fmt = msg.format.lower()
    words = fmt.replace(";", " ").split()
    if not any(w in _JPEG_FORMATS for w in words) or "png" in words:
        raise MessageError(f"a JPEG CompressedImage, found format {msg.format!r}")
    data = msg.data.tobytes()
    if not data.startswith(b"\xff\xd8"):
        raise MessageError(f"JPEG data starting FF D8, found {data[:2].hex()}")
    return data


def _field(info: Any, name: str) -> Any:
    """A CameraInfo field by its ROS 2 name (``k``) or its ROS 1 name (``K``)."""
    return getattr(info, name) if hasattr(info, name) else getattr(info, name.upper())


def camera_intrinsics(info: Any, rectified_topic: bool = False, max_fov_rad: float | None = None,
                      image_size: tuple[int, int] | None = None) -> CameraIntrinsics:
    """A deserialised CameraInfo → intrinsics (see the module docstring for the models);
    ``image_size`` ``(width, height)`` stands in for a CameraInfo that leaves its size 0.
    MessageError for what Fathom does not model."""
    model = str(info.distortion_model).strip().lower()
    d = np.asarray(_field(info, "d"), np.float64).ravel()
    k = np.asarray(_field(info, "k"), np.float64).ravel()
    p = np.asarray(_field(info, "p"), np.float64).ravel()
    width, height = int(info.width), int(info.height)
    if (width == 0 or height == 0) and image_size is not None:
        width, height = image_size
    if int(info.binning_x) > 1 or int(info.binning_y) > 1:
        raise MessageError(f"an unbinned camera, found binning {info.binning_x}x{info.binning_y}")
    roi = info.roi
    if int(roi.width) not in (0, width) or int(roi.height) not in (0, height) or int(roi.x_offset) or int(roi.y_offset):
        raise MessageError(f"the full image as region of interest, found {roi.width}x{roi.height}+"
                           f"{roi.x_offset}+{roi.y_offset}")
    if len(k) != 9 or len(p) != 12:
        raise MessageError(f"K of 9 and P of 12 numbers, found {len(k)} and {len(p)}")
    lens: LensModel = "pinhole"
    dist: tuple[float, ...] = ()
    src = k
    if rectified_topic:
        src = np.array([p[0], p[1], p[2], 0.0, p[5], p[6]])
    elif np.any(d != 0):
        if model in _BROWN:
            if len(d) > 8:
                raise MessageError(f"at most 8 {model} coefficients, found {len(d)}")
            lens, dist = "brown_conrady", tuple(d)
        elif model in _KANNALA:
            if len(d) > 4:
                raise MessageError(f"4 equidistant coefficients k1..k4, found {len(d)}")
            lens, dist = "kannala_brandt", tuple(d)
        else:
            raise MessageError(f"a distortion model Fathom models ({', '.join([*_BROWN, *_KANNALA])}, or all-zero D "
                               f"for a rectified image), found {info.distortion_model!r} with D={d.tolist()}")
    try:
        return CameraIntrinsics(width, height, float(src[0]), float(src[4]), float(src[2]), float(src[5]),
                                float(src[1]), lens, dist, max_fov_rad)
    except ValueError as exc:
        raise MessageError(f"valid intrinsics: {exc}") from None
