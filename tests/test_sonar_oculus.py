"""Oculus SimplePingResult: the real 8-bit ping against the liboculus struct layout,
16-bit and gain variants, points on the centre plane, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from engine.quaternion import from_euler_zyx
from engine.se3 import SE3
from formats.errors import FormatError
from formats.oculus import ping_to_sweep, read_oculus_pings

# liboculus / Oculus.h, #pragma pack(1): OculusMessageHeader, OculusSimpleFireMessage, OculusSimplePingResult
HEADER = "<H H H H H I H"
FIRE = "<B B B B B d d d d"
PING = "<I I d d d d I B d H H I I I"
PING_AT = struct.calcsize(HEADER) + struct.calcsize(FIRE)


def _fields(data: bytes) -> dict:
    h = struct.unpack_from(HEADER, data, 0)
    f = struct.unpack_from(FIRE, data, struct.calcsize(HEADER))
    p = struct.unpack_from(PING, data, PING_AT)
    names = ["pingId", "status", "frequency", "temperature", "pressure", "speedOfSoundUsed", "pingStartTime",
             "dataSize", "rangeResolution", "nRanges", "nBeams", "imageOffset", "imageSize", "messageSize"]
    return {"oculusId": h[0], "msgId": h[3], "msgVersion": h[4], "payloadSize": h[5], "flags": f[4],
            "range": f[5], **dict(zip(names, p))}


@pytest.fixture(scope="module")
def raw(real_data):
    return (real_data / "sonar" / "oculus_one_ping_8bit.raw").read_bytes()


def test_header_fields_match_liboculus_layout(raw):
    f = _fields(raw)
    assert PING_AT + struct.calcsize(PING) == 122
    assert f["oculusId"] == 0x4F53 and f["msgId"] == 35 and f["dataSize"] == 0
    assert f["nBeams"] == 256 and f["imageSize"] == f["nRanges"] * f["nBeams"]
    assert f["messageSize"] == len(raw) == 16 + f["payloadSize"]
    pings = read_oculus_pings(raw)
    assert len(pings) == 1
    p = pings[0]
    assert p.ping_id == f["pingId"] and p.image.shape == (f["nRanges"], 256) and p.image.dtype == np.uint8
    assert p.range_resolution_m == f["rangeResolution"] and p.range_m == f["range"]
    assert p.speed_of_sound_m_s == f["speedOfSoundUsed"] and p.row_gain is None
    assert p.range_resolution_m * f["nRanges"] == pytest.approx(p.range_m, rel=0.01)  # 703 bins cover 2 m
    bearings = np.frombuffer(raw, "<i2", 256, 122) / 100.0
    np.testing.assert_allclose(p.bearings_deg, bearings, atol=1e-5)
    assert bearings[0] == -30.0 and bearings[-1] == 30.0 and np.all(np.diff(bearings) > 0)
    np.testing.assert_array_equal(p.image.ravel(), np.frombuffer(raw, np.uint8, f["imageSize"], f["imageOffset"]))


def _reference_points(image, bearings_deg, res, thr):
    r, b = np.nonzero(image >= thr)
    rng = r * res
    a = np.radians(bearings_deg[b].astype(np.float64))
    return np.stack([rng * np.cos(a), -rng * np.sin(a), np.zeros_like(rng)], axis=1), image[r, b]


@pytest.mark.parametrize("threshold", [0, 60, 200.5, 255, 256])
def test_points_match_numpy_reference(raw, threshold):
    p = read_oculus_pings(raw)[0]
    sweep = ping_to_sweep(p, threshold)
    ref, val = _reference_points(p.image, p.bearings_deg, p.range_resolution_m, threshold)
    assert len(sweep) == len(ref) and sweep.frame == "sonar"
    np.testing.assert_allclose(sweep.xyz, ref, atol=1e-6)
    np.testing.assert_array_equal(sweep.intensity, val)
    if len(ref):
        np.testing.assert_allclose(np.hypot(sweep.xyz[:, 0], sweep.xyz[:, 1]), sweep.extra["range_m"], atol=1e-6)


def test_ego_transform(raw):
    p = read_oculus_pings(raw)[0]
    mount = SE3(from_euler_zyx(0.0, np.radians(20.0), 0.0), np.array([1.5, 0.0, -0.8]))
    sonar = ping_to_sweep(p, 100)
    ego = ping_to_sweep(p, 100, ego_from_sonar=mount)
    assert ego.frame == "ego"
    np.testing.assert_allclose(ego.xyz, mount.apply(sonar.xyz.astype(np.float64)), atol=1e-5)


def _rebuild(raw: bytes, bits16: bool, gain: bool) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The real ping re-encoded as 16-bit and/or with per-row gain (a layout variant)."""
    f = _fields(raw)
    img8 = np.frombuffer(raw, np.uint8, f["imageSize"], f["imageOffset"]).reshape(f["nRanges"], f["nBeams"])
    img = img8.astype(np.uint16) * 257 if bits16 else img8
    gains = np.linspace(1.0, 2.0, f["nRanges"], dtype=np.float32)
    rows = img.astype("<u2" if bits16 else np.uint8).view(np.uint8).reshape(f["nRanges"], -1)
    if gain:
        rows = np.concatenate([gains.view(np.uint8).reshape(-1, 4), rows], axis=1)
    image_bytes = rows.tobytes()
    head = bytearray(raw[: f["imageOffset"]])
    total = len(head) + len(image_bytes)
    struct.pack_into("<I", head, 10, total - 16)
    if gain:
        head[16 + 4] |= 0x04
    ping = list(struct.unpack_from(PING, head, PING_AT))
    ping[7] = 1 if bits16 else 0
    ping[12] = len(image_bytes)
    ping[13] = total
    struct.pack_into(PING, head, PING_AT, *ping)
    return bytes(head) + image_bytes, img, gains


@pytest.mark.parametrize("bits16,gain", [(True, False), (False, True), (True, True)])
def test_16_bit_and_gain_variants(raw, bits16, gain):
    data, img, gains = _rebuild(raw, bits16, gain)
    p = read_oculus_pings(data + data)  # two messages back to back
    assert len(p) == 2
    np.testing.assert_array_equal(p[1].image, img)
    assert p[1].image.dtype == (np.uint16 if bits16 else np.uint8)
    if gain:
        np.testing.assert_array_equal(p[1].row_gain, gains)
    sweep = ping_to_sweep(p[0], 60 * 257 if bits16 else 60)
    assert len(sweep) == int((img >= (60 * 257 if bits16 else 60)).sum())


def test_bad_input(raw):
    with pytest.raises(FormatError, match="0x4f53"):
        read_oculus_pings(b"\x00" * 200)
    with pytest.raises(FormatError, match="payload") as err:
        read_oculus_pings(raw[:5000])
    assert err.value.offset == 10
    bad = bytearray(raw)
    struct.pack_into("<I", bad, PING_AT + 62, 1234)  # imageSize
    with pytest.raises(FormatError, match="imageSize"):
        read_oculus_pings(bytes(bad))
    bad = bytearray(raw)
    struct.pack_into("<H", bad, 8, 2)
    with pytest.raises(FormatError, match="version"):
        read_oculus_pings(bytes(bad))
    bad = bytearray(raw)
    bad[PING_AT + 44] = 3
    with pytest.raises(FormatError, match="dataSize"):
        read_oculus_pings(bytes(bad))
    with pytest.raises(FormatError, match="empty"):
        read_oculus_pings(b"")
    rng = np.random.default_rng(4)
    for _ in range(200):
        bad = bytearray(raw[:2048])
        for k in rng.integers(0, 200, 3):
            bad[k] = int(rng.integers(0, 256))
        try:
            read_oculus_pings(bytes(bad) + raw[2048:])
        except FormatError:
            pass
