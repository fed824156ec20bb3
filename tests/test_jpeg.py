"""formats.jpeg: libjpeg-turbo decode/encode against OpenCV, corrupt data → FormatError."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from formats.errors import FormatError
from formats.jpeg import decode_jpeg, encode_jpeg, read_jpeg, write_jpeg


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
