"""What the files say is checked before it is believed: sensor status bits, position
validity, fix spans, size fields, multi-part datagrams, impossible pose values.

Every case starts from a real file of ``tests/data/sonar`` and, where the defect needs
damage, alters a copy at the byte offsets given by the format specifications."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from engine.geodesy import Origin
from engine.georeference import (
    FIX_BEYOND_SPAN,
    FIX_EXTRAPOLATED,
    FIX_IN_GAP,
    FIX_INTERPOLATED,
    interpolate_fixes,
    vessel_pose_track,
)
from formats.errors import FormatError
from formats.kmall import _split_m, read_kmall, read_kmall_world
from formats.kmall_sensors import KMB_INVALID_POSITION, skm_pose_track
from formats.kongsberg_all import read_all, read_all_world
from formats.raw_log import read_log, write_log_manifest
from formats.scene_store import SceneOrigin

# ---------------------------------------------------------------- byte walkers (from the specs)


def _kmall_walk(data: bytes, want: bytes | None = None) -> list[tuple[int, int]]:
    """(offset, numBytesDgm) of every KMALL datagram (of type ``want``)."""
    out, o = [], 0
    while o < len(data):
        n, t = struct.unpack_from("<I4s", data, o)
        if want is None or t == want:
            out.append((o, n))
        o += n
    return out


def _all_walk(data: bytes, want: int | None = None) -> list[tuple[int, int]]:
    """(offset, length) of every .all datagram (of type byte ``want``)."""
    out, o = [], 0
    while o < len(data):
        n = struct.unpack_from("<I", data, o)[0]
        if want is None or data[o + 5] == want:
            out.append((o, n))
        o += 4 + n
    return out


def _all_fix_checksum(buf: bytearray, o: int) -> None:
    n = struct.unpack_from("<I", buf, o)[0]
    struct.pack_into("<H", buf, o + 4 + n - 2, sum(buf[o + 5: o + 4 + n - 3]) & 0xFFFF)


def _mrz_parts(data: bytes, o: int) -> dict[str, int]:
    """Offsets inside the #MRZ at ``o`` (KMALL spec: header, partition, cmnPart, pingInfo, rxInfo)."""
    c = o + 24
    p = c + struct.unpack_from("<H", data, c)[0]
    ninfo = struct.unpack_from("<H", data, p)[0]
    ntx, per_tx = struct.unpack_from("<2H", data, p + 92)
    r = p + ninfo + ntx * per_tx
    return {"ping_info": p, "rx_info": r}


@pytest.fixture(scope="module")
def kmall_bytes(real_data) -> bytes:
    return (real_data / "sonar" / "em_os03_a.kmall").read_bytes()


@pytest.fixture(scope="module")
def all_bytes(real_data) -> bytes:
    return (real_data / "sonar" / "belgica_em2040.all").read_bytes()


# ---------------------------------------------------------------- 1. invalid positions


INVALID = np.arange(10, 30)  # #SKM samples altered to status 0x71, lat/lon 0 (as an EM 2040 wrote them)


def _skm_invalid_copy(data: bytes) -> bytes:
    (o, _), = _kmall_walk(data, b"#SKM")
    buf = bytearray(data)
    info = struct.unpack_from("<H", buf, o + 20)[0]
    per = struct.unpack_from("<H", buf, o + 20 + 8)[0]
    for k in INVALID:
        s = o + 20 + info + k * per
        struct.pack_into("<I2d", buf, s + 16, 0x71, 0.0, 0.0)
    return bytes(buf)


def test_skm_status_bits_drop_invalid_samples_from_the_pose_track(kmall_bytes):
    good = read_kmall(kmall_bytes).attitude
    bad = read_kmall(_skm_invalid_copy(kmall_bytes)).attitude
    want = np.ones(len(good), bool)
    want[INVALID] = False
    np.testing.assert_array_equal(bad.pose_valid, want)
    assert np.all(bad.status[INVALID] & KMB_INVALID_POSITION)
    origin = Origin(float(good.latitude_deg[0]), float(good.longitude_deg[0]), 0.0)
    # believing every sample puts 20 poses at (0, 0), thousands of km from the survey
    believed = vessel_pose_track(bad.time_ns, bad.latitude_deg, bad.longitude_deg, bad.ellipsoid_height_m,
                                 bad.roll_deg, bad.pitch_deg, bad.heading_deg, origin)
    assert np.linalg.norm(believed.translation, axis=1).max() > 5e6
    track = skm_pose_track(bad, origin)
    ref = vessel_pose_track(good.time_ns[want], good.latitude_deg[want], good.longitude_deg[want],
                            good.ellipsoid_height_m[want], good.roll_deg[want], good.pitch_deg[want],
                            good.heading_deg[want], origin)
    np.testing.assert_array_equal(track.timestamps_ns, good.time_ns[want])
    np.testing.assert_array_equal(track.translation, ref.translation)
    assert np.linalg.norm(track.translation, axis=1).max() < 100.0


def test_skm_with_no_valid_sample_is_an_error(kmall_bytes):
    bad = read_kmall(_skm_invalid_copy(kmall_bytes)).attitude
    bad.status[:] = KMB_INVALID_POSITION
    with pytest.raises(FormatError, match="valid #SKM"):
        skm_pose_track(bad, Origin(51.2, 2.9, 0.0), "x.kmall")


def test_raw_log_skm_track_drops_invalid_samples(kmall_bytes, tmp_path):
    (tmp_path / "sonar").mkdir()
    (tmp_path / "sonar" / "M.kmall").write_bytes(_skm_invalid_copy(kmall_bytes))
    att = read_kmall(kmall_bytes).attitude
    origin = (float(att.latitude_deg[0]), float(att.longitude_deg[0]), 0.0)
    write_log_manifest(tmp_path, log_id="x", origin=SceneOrigin((0.0, 0.0, 0.0), origin), lidars=[], cameras=[],
                       frames=[{"timestamp_ns": int(att.time_ns[0]), "lidar": {}, "images": {}}])
    doc = json.loads((tmp_path / "log.json").read_text())
    doc["poses"] = {"kind": "kmall_skm", "path": "sonar/M.kmall"}
    (tmp_path / "log.json").write_text(json.dumps(doc))
    track = read_log(tmp_path).world_from_ego()
    assert len(track) == len(att) - len(INVALID)
    assert not np.isin(track.timestamps_ns, att.time_ns[INVALID]).any()
    assert np.linalg.norm(track.translation, axis=1).max() < 100.0


def test_spo_sensor_status_and_unavailable_position(kmall_bytes):
    buf = bytearray(kmall_bytes)
    (o1, _), (o2, _) = _kmall_walk(kmall_bytes, b"#SPO")
    struct.pack_into("<H", buf, o1 + 20 + 4, 0x10)  # sensorStatus bit 4: invalid data
    d2 = o2 + 20 + struct.unpack_from("<H", buf, o2 + 20)[0]
    struct.pack_into("<2d", buf, d2 + 12, 200.0, 200.0)  # UNAVAILABLE_LATITUDE / LONGITUDE
    assert read_kmall(kmall_bytes).positions.valid.tolist() == [True, True]
    assert read_kmall(bytes(buf)).positions.valid.tolist() == [False, False]


@pytest.mark.parametrize("what", ["pos_status", "att_status", "unavailable"])
def test_mrz_ping_with_invalid_position_is_reported_not_placed(kmall_bytes, what):
    buf = bytearray(kmall_bytes)
    mrz = _kmall_walk(kmall_bytes, b"#MRZ")
    p = _mrz_parts(kmall_bytes, mrz[2][0])["ping_info"]
    if what == "unavailable":
        struct.pack_into("<2d", buf, p + 124, 200.0, 200.0)
    else:
        buf[p + (121 if what == "pos_status" else 122)] = 1
    good, bad = read_kmall(kmall_bytes), read_kmall(bytes(buf))
    origin = Origin(float(good.pings.latitude_deg[0]), float(good.pings.longitude_deg[0]), 0.0)
    ref = read_kmall_world(good, origin)
    got = read_kmall_world(bad, origin)
    assert [i for i, _ in got.unplaced] == [2]
    assert {"pos_status": "posSensorStatus", "att_status": "attitudeSensorStatus",
            "unavailable": "200"}[what] in got.unplaced[0][1]
    other = ref.sweep.extra["ping_index"] != 2
    np.testing.assert_array_equal(got.xyz_world, ref.xyz_world[other])
    np.testing.assert_array_equal(got.sweep.extra["ping_index"], ref.sweep.extra["ping_index"][other])


# ---------------------------------------------------------------- 2. .all pings beyond the fixes


def _active_fix_times(log) -> np.ndarray:
    pos = log.position
    return pos["time_ns"][(pos["descriptor"] & 0x80) != 0]


def test_all_pings_beyond_the_fixes_are_refused_by_default(all_bytes):
    log = read_all(all_bytes)
    fixes = _active_fix_times(log)
    t = log.xyz.ping["time_ns"]
    outside = np.flatnonzero((t < fixes.min()) | (t > fixes.max()))
    assert len(outside) > 0  # this real file has pings before its first active fix
    origin = Origin(51.3685, 3.1393, 0.0)
    got = read_all_world(log, origin)
    assert [i for i, _ in got.unplaced] == outside.tolist()
    assert all("before the first valid position fix" in why for _, why in got.unplaced)
    assert not np.isin(got.sweep.extra["ping_index"], outside).any()
    assert not got.sweep.extra["pose_extrapolated"].any()


def test_all_extrapolation_within_a_stated_limit_is_marked(all_bytes):
    log = read_all(all_bytes)
    fixes = _active_fix_times(log)
    t = log.xyz.ping["time_ns"]
    beyond = np.where(t < fixes.min(), fixes.min() - t, 0)
    origin = Origin(51.3685, 3.1393, 0.0)
    limit_s = float(np.sort(beyond[beyond > 0])[0]) / 1e9  # only the nearest outside ping(s) qualify
    got = read_all_world(log, origin, extrapolate="linear", max_extrapolation_s=limit_s)
    placed_outside = np.flatnonzero((beyond > 0) & (beyond <= round(limit_s * 1e9)))
    refused = np.flatnonzero(beyond > round(limit_s * 1e9))
    assert [i for i, _ in got.unplaced] == refused.tolist()
    flagged = np.unique(got.sweep.extra["ping_index"][got.sweep.extra["pose_extrapolated"]])
    np.testing.assert_array_equal(flagged, placed_outside)
    held = read_all_world(log, origin, extrapolate="hold", max_extrapolation_s=10.0)
    assert held.unplaced == []
    assert held.sweep.extra["pose_extrapolated"].sum() == np.isin(held.sweep.extra["ping_index"],
                                                                  np.flatnonzero(beyond > 0)).sum()


def test_interpolate_fixes_against_numpy():
    fix_t = np.array([0, 1_000, 2_000, 10_000, 11_000], np.int64)
    lat = np.array([50.0, 50.1, 50.2, 50.3, 50.4])
    lon = np.array([179.9, -179.9, -179.7, -179.6, -179.5])  # crosses the antimeridian
    q = np.array([-500, 0, 500, 1_500, 5_000, 10_000, 10_500, 11_000, 12_000], np.int64)
    got_lat, got_lon, status = interpolate_fixes(fix_t, lat, lon, q, "linear", 600, max_gap_ns=5_000)
    assert status.tolist() == [FIX_EXTRAPOLATED, FIX_INTERPOLATED, FIX_INTERPOLATED, FIX_INTERPOLATED, FIX_IN_GAP,
                               FIX_INTERPOLATED, FIX_INTERPOLATED, FIX_INTERPOLATED, FIX_BEYOND_SPAN]
    ok = status == FIX_INTERPOLATED
    np.testing.assert_allclose(got_lat[ok], np.interp(q[ok], fix_t, lat), rtol=0, atol=1e-12)
    unwrapped = np.interp(q[ok], fix_t, np.unwrap(lon, period=360))
    np.testing.assert_allclose(got_lon[ok], (unwrapped + 180) % 360 - 180, rtol=0, atol=1e-9)
    assert abs(abs(got_lon[2]) - 180.0) < 1e-9  # halfway across the antimeridian, not back across the globe
    assert got_lat[0] == pytest.approx(50.0 - 0.05, abs=1e-12)  # the first interval continued
    assert np.isnan(got_lat[status < 0]).all()
    _, _, held = interpolate_fixes(fix_t, lat, lon, q, "none")
    assert held[0] == FIX_BEYOND_SPAN and held[-1] == FIX_BEYOND_SPAN
    with pytest.raises(ValueError, match="extrapolate"):
        interpolate_fixes(fix_t, lat, lon, q, "wild")


@pytest.mark.parametrize("damage", ["gga_no_fix", "unavailable"])
def test_all_invalid_position_fixes_are_not_used(all_bytes, damage):
    log = read_all(all_bytes)
    active = np.flatnonzero((log.position["descriptor"] & 0x80) != 0)
    k = int(active[1])
    o, _ = _all_walk(all_bytes, 0x50)[k]
    buf = bytearray(all_bytes)
    if damage == "unavailable":
        struct.pack_into("<i", buf, o + 20, 0x7FFFFFFF)
    else:
        text = bytes(buf[o + 38: o + 38 + buf[o + 37]])
        q = text.index(b",", text.index(b"E,")) + 1  # GGA field 6 follows the E/W hemisphere
        buf[o + 38 + q] = ord("0")
    _all_fix_checksum(buf, o)
    bad = read_all(bytes(buf))
    want = np.ones(len(log.position["time_ns"]), bool)
    want[k] = False
    np.testing.assert_array_equal(bad.position["valid"], want)
    origin = Origin(51.3685, 3.1393, 0.0)
    got = read_all_world(bad, origin, extrapolate="hold", max_extrapolation_s=10.0)
    ref = read_all_world(log, origin, extrapolate="hold", max_extrapolation_s=10.0)
    assert len(got.sweep) == len(ref.sweep)
    assert not np.array_equal(got.xyz_world, ref.xyz_world)  # the bad fix no longer pulls the pings


# ---------------------------------------------------------------- 3. size fields


@pytest.mark.parametrize("field,at,value", [
    ("numBytesRxInfo", 0, 36), ("numSoundingsMaxMain", 2, 399), ("numBytesPerSounding", 6, 124),
    ("numExtraDetections", 26, 1),
])
def test_mrz_size_fields_must_end_at_the_datagram_end(kmall_bytes, field, at, value):
    o, _ = _kmall_walk(kmall_bytes, b"#MRZ")[1]
    r = _mrz_parts(kmall_bytes, o)["rx_info"]
    buf = bytearray(kmall_bytes)
    struct.pack_into("<H", buf, r + at, value)
    with pytest.raises(FormatError, match="end") as err:
        read_kmall(bytes(buf))
    assert o < err.value.offset < o + 1000
    log = read_kmall(bytes(buf), recover=True)
    assert log.pings.num_pings == 4 and [c[0] for c in log.corrupt] == [o]
    assert np.all(log.pings.detection_type <= 2)


def test_mrz_detection_type_beyond_2_is_an_error(kmall_bytes):
    o, _ = _kmall_walk(kmall_bytes, b"#MRZ")[0]
    r = _mrz_parts(kmall_bytes, o)["rx_info"]
    nrx = struct.unpack_from("<H", kmall_bytes, r)[0]
    buf = bytearray(kmall_bytes)
    buf[r + nrx + 120 * 5 + 3] = 51  # sounding 5's detectionType
    with pytest.raises(FormatError, match="sounding 5: detectionType") as err:
        read_kmall(bytes(buf))
    assert err.value.offset == r + nrx + 120 * 5 + 3


def test_skm_sample_size_and_marker_are_checked(kmall_bytes):
    (o, _), = _kmall_walk(kmall_bytes, b"#SKM")
    buf = bytearray(kmall_bytes)
    struct.pack_into("<H", buf, o + 20 + 8, 130)  # numBytesPerSample
    with pytest.raises(FormatError, match="#SKM samples"):
        read_kmall(bytes(buf))
    buf = bytearray(kmall_bytes)
    s7 = o + 20 + 12 + 7 * 132
    buf[s7: s7 + 4] = b"#KMX"
    with pytest.raises(FormatError, match="#SKM sample 7") as err:
        read_kmall(bytes(buf))
    assert err.value.offset == s7


@pytest.mark.parametrize("kind,count_at", [(0x58, 8), (0x41, 0), (0x4E, 4)])
def test_all_counts_must_match_the_datagram_length(all_bytes, kind, count_at):
    o, _ = _all_walk(all_bytes, kind)[0]
    buf = bytearray(all_bytes)
    at = o + 20 + count_at
    struct.pack_into("<H", buf, at, struct.unpack_from("<H", buf, at)[0] - 1)  # one beam/entry fewer
    _all_fix_checksum(buf, o)  # a matching checksum: only the length check can catch it
    with pytest.raises(FormatError, match="ending at the datagram's ETX"):
        read_all(bytes(buf))


# ---------------------------------------------------------------- 4. incomplete multi-part #MRZ


def _split_copy(data: bytes, ping: int, keep_parts=None) -> tuple[bytes, int]:
    o, n = _kmall_walk(data, b"#MRZ")[ping]
    parts = _split_m(data[o: o + n], 20000)
    assert len(parts) >= 3
    kept = parts if keep_parts is None else [parts[k] for k in keep_parts]
    return data[:o] + b"".join(kept) + data[o + n:], o


def test_multipart_mrz_rejoined(kmall_bytes):
    joined, _ = _split_copy(kmall_bytes, 1)
    a, b = read_kmall(kmall_bytes).pings, read_kmall(joined).pings
    np.testing.assert_array_equal(a.x_m, b.x_m)
    np.testing.assert_array_equal(a.time_ns, b.time_ns)


@pytest.mark.parametrize("ping,keep", [(1, [0, 2]), (4, [0, 1]), (2, [1, 2])])
def test_incomplete_multipart_mrz_is_reported(kmall_bytes, ping, keep):
    cut, o = _split_copy(kmall_bytes, ping, keep)
    if ping == 4:  # the last #MRZ: cut short by the end of the file
        cut = cut[: o + sum(len(p) for p in _split_m(kmall_bytes[o: o + _kmall_walk(kmall_bytes, b"#MRZ")[4][1]],
                                                        20000)[:2])]
    with pytest.raises(FormatError) as err:
        read_kmall(cut)
    assert err.value.offset == o
    log = read_kmall(cut, recover=True)
    assert log.pings.num_pings == 4
    # the cut datagram at its first part, then any orphan later part on its own
    assert log.corrupt[0][0] == o and all(o <= at < o + 70_000 for at, _ in log.corrupt)
    assert "part" in log.corrupt[0][1]
    np.testing.assert_array_equal(log.pings.time_ns, np.delete(read_kmall(kmall_bytes).pings.time_ns, ping))


# ---------------------------------------------------------------- 5. impossible pose values


@pytest.mark.parametrize("field,at,fmt,value", [
    ("heading", 96, "<f", float("nan")), ("latitude", 124, "<d", 95.0), ("waterline z", 108, "<f", float("inf")),
])
def test_kmall_world_impossible_pose_is_a_format_error(kmall_bytes, tmp_path, field, at, fmt, value):
    o, _ = _kmall_walk(kmall_bytes, b"#MRZ")[3]
    buf = bytearray(kmall_bytes)
    struct.pack_into(fmt, buf, _mrz_parts(kmall_bytes, o)["ping_info"] + at, value)
    path = tmp_path / "bad.kmall"
    path.write_bytes(bytes(buf))
    with pytest.raises(FormatError, match=f"ping 3: {field}") as err:
        read_kmall_world(path, Origin(51.2254, 2.9385, 0.0))
    assert err.value.offset == o and err.value.path == str(path)


def test_all_world_without_positions_is_a_format_error(all_bytes, tmp_path):
    kept = b"".join(all_bytes[o: o + 4 + n] for o, n in _all_walk(all_bytes) if all_bytes[o + 5] != 0x50)
    path = tmp_path / "nopos.all"
    path.write_bytes(kept)
    with pytest.raises(FormatError, match="valid position fix") as err:
        read_all_world(path, Origin(51.3685, 3.1393, 0.0))
    assert err.value.path == str(path)


# ---------------------------------------------------------------- random damage


@pytest.mark.parametrize("name", ["gsf3_08_test_file.gsf", "em_os03_a.kmwcd", "belgica_em2040.wcd", "em_os03_a.kmall",
                                  "belgica_em2040.all"])
def test_random_damage_raises_format_errors_only(real_data, name):
    """Byte flips, truncations and extreme 32-bit values: a result or a FormatError, nothing else."""
    from formats.gsf import read_gsf_world
    from formats.water_column_all import read_all_water_column
    from formats.water_column_kmall import read_kmall_water_column

    readers = {
        ".gsf": lambda d: read_gsf_world(d, Origin(8.7, 167.4, 0.0)),
        ".kmwcd": lambda d: read_kmall_water_column(d, recover=True),
        ".wcd": lambda d: read_all_water_column(d, verify_checksum=False, recover=True),
        ".kmall": lambda d: read_kmall_world(read_kmall(d, recover=True), Origin(51.2, 2.9, 0.0)),
        ".all": lambda d: read_all_world(read_all(d, verify_checksum=False), Origin(51.3, 3.1, 0.0),
                                         extrapolate="linear", max_extrapolation_s=5.0),
    }
    read = readers["." + name.split(".")[-1]]
    data = (real_data / "sonar" / name).read_bytes()
    rng = np.random.default_rng(11)
    for i in range(60):
        bad = bytearray(data)
        if i % 3 == 0:
            for k in rng.integers(0, len(bad), 4):
                bad[k] = int(rng.integers(0, 256))
        elif i % 3 == 1:
            bad = bad[: int(rng.integers(0, len(bad)))]
        else:
            value = int(rng.choice([0, 1, 255, 65535, 2**31 - 1, 2**32 - 1]))
            struct.pack_into("<I", bad, int(rng.integers(0, len(bad) - 4)), value)
        try:
            read(bytes(bad))
        except FormatError:
            pass
