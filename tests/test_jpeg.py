"""formats.jpeg: libjpeg-turbo decode/encode against OpenCV and PyTurboJPEG, corrupt data →
FormatError, DCT-scaled decoding and its intrinsics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.camera import Camera, CameraIntrinsics
from engine.projection import project_points
from engine.se3 import SE3
from formats.errors import FormatError
from formats.jpeg import (
    DECODE_SCALES,
    SCALES,
    decode_jpeg,
    encode_jpeg,
    read_jpeg,
    scale_pixels,
    scaled_camera,
    scaled_intrinsics,
    scaled_size,
    write_jpeg,
)


@pytest.fixture(scope="module")
def image():
    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([(x * 2) % 256, (y * 2) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    rgb[20:40, 30:70] = [250, 10, 10]
    return rgb


def test_decode_matches_opencv(image):
    ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    ours = decode_jpeg(buf.tobytes())
    ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    assert ours.shape == (96, 128, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref).max() <= 1
    gray = decode_jpeg(buf.tobytes(), gray=True)
    ref_gray = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    assert gray.shape == (96, 128) and np.abs(gray.astype(int) - ref_gray).max() <= 1


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_encode_round_trip(image, tmp_path, subsampling):
    data = encode_jpeg(image, quality=95, subsampling=subsampling)
    ref = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.abs(ref.astype(int) - image).mean() < 4
    path = tmp_path / "a.jpg"
    write_jpeg(path, image, 95, subsampling)
    np.testing.assert_array_equal(read_jpeg(path), decode_jpeg(data))
    gray = encode_jpeg(image[:, :, 0])
    assert decode_jpeg(gray, gray=True).shape == (96, 128)


def test_corrupt_data_raises_format_error(image, tmp_path):
    good = encode_jpeg(image)
    with pytest.raises(FormatError) as e:
        decode_jpeg(b"\x89PNG\r\n\x1a\n" + good[8:])
    assert e.value.offset == 0 and "SOI" in e.value.expected
    with pytest.raises(FormatError) as e:
        decode_jpeg(good[:1])
    assert e.value.offset == 0
    # a segment length running past the end of the file, at the first segment (byte 2)
    bad = bytearray(good)
    bad[4:6] = b"\xff\xff"
    with pytest.raises(FormatError) as e:
        decode_jpeg(bytes(bad), path="x.jpg")
    assert e.value.offset == 4 and e.value.path == "x.jpg"
    # truncated inside the image data
    with pytest.raises(FormatError, match="truncated|EOI"):
        decode_jpeg(good[: len(good) // 2])
    # header cut before the scan
    with pytest.raises(FormatError):
        decode_jpeg(good[:100])
    # garbage in the entropy-coded data
    sos = good.find(b"\xff\xda")
    bad = bytearray(good)
    rng = np.random.default_rng(0)
    bad[sos + 40 : len(good) - 40] = rng.integers(0, 256, len(good) - 80 - sos).astype(np.uint8).tobytes()
    with pytest.raises(FormatError) as e:
        decode_jpeg(bytes(bad))
    assert e.value.offset == sos
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    with pytest.raises(FormatError) as e:
        read_jpeg(path)
    assert e.value.path == str(path)


def test_encode_bad_input(image):
    with pytest.raises(ValueError, match="uint8"):
        encode_jpeg(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        encode_jpeg(image[:, :, :2])
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(image, quality=0)
    with pytest.raises(ValueError, match="subsampling"):
        encode_jpeg(image, subsampling="411")


# ---------------------------------------------------------------- decoding at a DCT scale

_SCALE_LENSES = [
    CameraIntrinsics(640, 480, 500.0, 505.0, 318.3, 241.7, skew=0.7),
    CameraIntrinsics(640, 480, 520.0, 515.0, 321.0, 236.0, skew=0.4, model="brown_conrady",
                     distortion=(-0.3, 0.1, 1e-3, -8e-4, -0.02, 0.01, -0.003, 0.002)),
    CameraIntrinsics(641, 481, 300.0, 301.0, 320.5, 240.2, model="kannala_brandt", distortion=(0.05, -0.01, 0.004)),
]


@pytest.mark.parametrize("scale", [(1, 2), (1, 4), (3, 8)])
def test_decode_at_scale_matches_opencv_reduced(image, scale):
    data = encode_jpeg(image, quality=95, subsampling="444")
    half = decode_jpeg(data, scale=scale)
    assert half.shape[:2][::-1] == scaled_size(128, 96, scale) == (-(-128 * scale[0] // scale[1]),
                                                                   -(-96 * scale[0] // scale[1]))
    if scale == (1, 2):  # OpenCV reads reduced images through libjpeg's own DCT scaling
        ref = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)[:, :, ::-1]
        assert np.abs(half.astype(int) - ref).max() <= 2
    assert decode_jpeg(data, gray=True, scale=scale).shape == half.shape[:2]
    with pytest.raises(ValueError, match="scale"):
        decode_jpeg(data, scale=(1, 3))
    with pytest.raises(ValueError, match="scale"):
        decode_jpeg(data, scale=2)
    with pytest.raises(ValueError, match="scale"):  # a libjpeg-turbo factor, but it enlarges
        decode_jpeg(data, scale=(2, 1))


@pytest.mark.parametrize("size", [(641, 481), (37, 23), (5, 3)])
@pytest.mark.parametrize("subsampling", ["444", "422", "420"])
def test_matches_pyturbojpeg_at_every_scale(size, subsampling):
    # the test extra's PyTurboJPEG (Debian's system libjpeg-turbo) as the peer: the same
    # scaling factors, byte-identical encodes and bit-identical decodes at every DCT scale
    # (scaled_size's ceil included), colour and gray, down to images smaller than a block
    turbojpeg = pytest.importorskip("turbojpeg")
    tj = turbojpeg.TurboJPEG()
    assert SCALES == tj.scaling_factors
    assert DECODE_SCALES == {f for f in tj.scaling_factors if f[0] <= f[1]}
    w, h = size
    rng = np.random.default_rng(w)
    y, x = np.mgrid[0:h, 0:w]
    rgb = (rng.integers(0, 64, (h, w, 3)) + ((x + 2 * y) % 192)[..., None]).astype(np.uint8)
    samp = {"444": turbojpeg.TJSAMP_444, "422": turbojpeg.TJSAMP_422, "420": turbojpeg.TJSAMP_420}[subsampling]
    data = encode_jpeg(rgb, 90, subsampling)
    assert data == tj.encode(rgb, quality=90, pixel_format=turbojpeg.TJPF_RGB, jpeg_subsample=samp)
    gray = encode_jpeg(rgb[:, :, 1], 90)
    assert gray == tj.encode(np.ascontiguousarray(rgb[:, :, 1:2]), quality=90, pixel_format=turbojpeg.TJPF_GRAY,
                             jpeg_subsample=turbojpeg.TJSAMP_GRAY)
    for scale in sorted(DECODE_SCALES):
        factor = None if scale == (1, 1) else scale
        for blob in (data, gray):
            ours = decode_jpeg(blob, scale=scale)
            assert ours.shape == (*scaled_size(w, h, scale)[::-1], 3)
            np.testing.assert_array_equal(ours, tj.decode(blob, pixel_format=turbojpeg.TJPF_RGB, scaling_factor=factor))
            peer = tj.decode(blob, pixel_format=turbojpeg.TJPF_GRAY, scaling_factor=factor)
            np.testing.assert_array_equal(decode_jpeg(blob, gray=True, scale=scale), peer[:, :, 0])


@pytest.mark.parametrize("intr", _SCALE_LENSES, ids=lambda i: i.model)
@pytest.mark.parametrize("scale", [(1, 2), (1, 8), (3, 4)])
def test_scaled_intrinsics_is_exact_for_every_lens(intr, scale):
    # u' = s (u + 0.5) - 0.5 for every point the full-size camera projects into its image
    s = scale[0] / scale[1]
    small = scaled_intrinsics(intr, scale)
    assert (small.width, small.height) == scaled_size(intr.width, intr.height, scale)
    assert small.distortion == intr.distortion and small.model == intr.model
    rng = np.random.default_rng(0)
    pts = rng.uniform([-4, -3, 1], [4, 3, 8], (3000, 3))
    full = project_points(pts, [Camera("c", intr, SE3.identity())])
    part = project_points(pts, [Camera("c", small, SE3.identity())])
    ok = full.in_image[0]
    assert ok.sum() > 1000
    np.testing.assert_allclose(part.uv[0][ok], s * (full.uv[0][ok] + 0.5) - 0.5, rtol=0, atol=1e-9)
    moved = full.uv[0][ok].copy()
    assert scale_pixels(moved, scale) is moved  # in place, the same mapping
    np.testing.assert_allclose(moved, part.uv[0][ok], rtol=0, atol=1e-9)
    same = full.uv[0][ok].copy()
    np.testing.assert_array_equal(scale_pixels(same, (1, 1)), full.uv[0][ok])
    with pytest.raises(ValueError, match="scale"):
        scale_pixels(same, (1, 3))


def test_scaled_intrinsics_against_decoded_blob():
    # a smooth blob drawn at a point's full-size projection, JPEG-encoded and decoded at 1/2,
    # has its centroid at the point's projection through the scaled intrinsics
    intr = _SCALE_LENSES[1]
    cam = Camera("c", intr, SE3.identity())
    small = Camera("c", scaled_intrinsics(intr, (1, 2)), SE3.identity())
    pts = np.array([[0.3, -0.2, 3.0], [-1.0, 0.5, 4.0], [0.9, 0.7, 2.5]])
    uv = project_points(pts, [cam]).uv[0]
    y, x = np.mgrid[0 : intr.height, 0 : intr.width]
    img = np.zeros((intr.height, intr.width))
    for u, v in uv:
        img += 250 * np.exp(-((x - u) ** 2 + (y - v) ** 2) / (2 * 4.0**2))
    half = decode_jpeg(encode_jpeg(np.round(img).astype(np.uint8), quality=100), gray=True, scale=(1, 2))
    expect = project_points(pts, [small]).uv[0]
    yy, xx = np.mgrid[0 : half.shape[0], 0 : half.shape[1]]
    for (u, v), (eu, ev) in zip(uv, expect):
        win = (np.abs(xx - eu) < 8) & (np.abs(yy - ev) < 8)
        w = half[win].astype(float)
        cu, cv_ = (xx[win] * w).sum() / w.sum(), (yy[win] * w).sum() / w.sum()
        assert abs(cu - eu) < 0.03 and abs(cv_ - ev) < 0.03
        assert abs(cu - (u / 2)) > 0.2  # the naive cx/2 would be a quarter pixel off


def test_scaled_render_matches_half_decoded_render(drive):
    # the rig's front camera at 4× its size rendered and decoded at 1/2 agrees with the
    # same camera rendered directly with scaled_intrinsics (up to silhouette pixels)
    from engine.sim.camera_render import render_camera

    base = drive.cameras[0]
    big = Camera(base.name, scaled_intrinsics(scaled_intrinsics(base.intrinsics, (2, 1)), (2, 1)), base.ego_from_camera)
    t = int(drive.frame_times_ns[0])
    full = render_camera(drive.world, drive.world_from_ego, big, t)
    decoded = decode_jpeg(encode_jpeg(full.rgb, quality=100, subsampling="444"), scale=(1, 2))
    small, offset = scaled_camera(big, (1, 2))
    assert offset == 0
    direct = render_camera(drive.world, drive.world_from_ego, small, t)
    assert decoded.shape == direct.rgb.shape
    # (point-sampled silhouettes differ by a pixel either way; the blob test above pins the
    # quarter-pixel that the half-pixel convention is about)
    assert (np.abs(decoded.astype(int) - direct.rgb).max(axis=2) > 40).mean() < 0.01


def test_scaled_camera_rolling_shutter_rows():
    intr = CameraIntrinsics(64, 48, 40.0, 40.0, 31.5, 23.5)
    cam = Camera("r", intr, SE3.identity(), shutter="rolling", row_readout_ns=30_000)
    small, offset = scaled_camera(cam, (1, 2))
    # scaled row r' is full row 2 r' + 0.5: rows 60 µs apart, row 0 at +15 µs
    assert small.row_readout_ns == 60_000 and offset == 15_000 and small.shutter == "rolling"
    assert small.intrinsics == scaled_intrinsics(intr, (1, 2))
    with pytest.raises(ValueError, match="CameraIntrinsics"):
        scaled_intrinsics(cam, (1, 2))
