"""Ouster decoding vs ouster-sdk (its packet writer, pcap recorder, scan source and XYZLut) for
every profile, 16-128 beams and both metadata formats; a NumPy packet builder and XYZ formula
for the column window, time sources and bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from engine.sweep import Sweep
from formats.errors import FormatError
from formats.ouster import read_ouster_pcap, read_ouster_sweep
from formats.ouster_metadata import PROFILES, parse_ouster_metadata, read_ouster_metadata
from formats.pcap import udp_pcap_bytes

T0 = 1_700_000_000_000_000_000
COLUMN_NS = 97_656  # 1024 columns at 10 Hz


def _doc(h: int, profile: str, w: int = 1024, cpp: int = 16, window=None, seed: int = 0) -> dict:
    """Current-format metadata of an OS-1-``h`` (made-up beam angles of the usual spread)."""
    rng = np.random.default_rng(seed)
    alt = np.linspace(21.5, -21.5, h) + rng.normal(0, 0.05, h)
    az = np.tile([4.2, 1.4, -1.4, -4.2], h // 4 + 1)[:h] + rng.normal(0, 0.02, h)
    return {
        "beam_intrinsics": {"beam_altitude_angles": alt.round(3).tolist(), "beam_azimuth_angles": az.round(3).tolist(),
                            "beam_to_lidar_transform": [1, 0, 0, 15.806, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
                            "lidar_origin_to_beam_origin_mm": 15.806},
        "calibration_status": {"reflectivity": {"timestamp": "2023-01-01T00:00:00", "valid": True}},
        "config_params": {"lidar_mode": f"{w}x10", "udp_port_lidar": 7502, "udp_port_imu": 7503,
                          "udp_profile_lidar": profile},
        "imu_intrinsics": {"imu_to_sensor_transform": [1, 0, 0, 6.253, 0, 1, 0, -11.775, 0, 0, 1, 7.645, 0, 0, 0, 1]},
        "lidar_data_format": {"column_window": window or [0, w - 1], "columns_per_frame": w, "columns_per_packet": cpp,
                              "pixel_shift_by_row": [0] * h, "pixels_per_column": h, "udp_profile_lidar": profile},
        "lidar_intrinsics": {"lidar_to_sensor_transform": [-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 36.18, 0, 0, 0, 1]},
        "sensor_info": {"build_rev": "v2.5.0", "initialization_id": 8247301, "prod_line": f"OS-1-{h}",
                        "prod_sn": "992146000760"},
    }


def _legacy(doc: dict) -> dict:
    """The same metadata in the legacy flat format (firmware 2.0)."""
    fmt = doc["lidar_data_format"]
    return {**doc["beam_intrinsics"], **doc["lidar_intrinsics"], **doc["imu_intrinsics"],
            "build_rev": "v2.0.0", "prod_line": doc["sensor_info"]["prod_line"],
            "prod_sn": doc["sensor_info"]["prod_sn"], "lidar_mode": doc["config_params"]["lidar_mode"],
            "data_format": {k: fmt[k] for k in ("pixels_per_column", "columns_per_packet", "columns_per_frame",
                                                "pixel_shift_by_row", "column_window", "udp_profile_lidar")}}


# ---------------------------------------------------------------- against ouster-sdk
@pytest.fixture(scope="module")
def sdk():
    core = pytest.importorskip("ouster.sdk.core", reason="ouster-sdk (installed --no-deps) is the Ouster peer")
    pcap = pytest.importorskip("ouster.sdk.pcap")
    return core, pcap


def _sdk_capture(sdk, doc: dict, frames: int, path, seed: int = 1, time0: int = T0) -> None:
    """A capture written by ouster-sdk: random fields set with its PacketFormat, recorded with
    its pcap writer. Column time stamps ``time0 + column index * COLUMN_NS``."""
    core, pcap = sdk
    info = core.SensorInfo(json.dumps(doc))
    pf = core.PacketFormat(info)
    h, w, cpp = info.format.pixels_per_column, info.format.columns_per_frame, info.format.columns_per_packet
    rng = np.random.default_rng(seed)
    packets = []
    for f in range(frames):
        for p in range(w // cpp):
            pkt = core.LidarPacket(pf)
            for name in pf.fields:
                mask = pf.field_value_mask(name)
                if name.startswith(("RAW", "FLAG", "WINDOW")):
                    continue
                if "RANGE" in name:
                    v = rng.integers(300, 150_000, (h, cpp)) & mask
                    v[rng.random((h, cpp)) < 0.1] = 0
                else:
                    v = rng.integers(0, mask + 1, (h, cpp)) & mask
                pf.set_field(pkt, name, v.astype(np.uint32))
            pf.set_frame_id(pkt, f)
            for c in range(cpp):
                m = p * cpp + c
                pf.set_col_timestamp(pkt, c, time0 + (f * w + m) * COLUMN_NS)
                pf.set_col_measurement_id(pkt, c, m)
                pf.set_col_status(pkt, c, 1)
            pkt.host_timestamp = T0 + (f * w + p * cpp) * COLUMN_NS + 40_000
            packets.append(pkt)
    pcap.record(packets, str(path))


def _sdk_points(sdk, doc: dict, path) -> list[dict[str, np.ndarray]]:
    """Per scan, the SDK's points with a non-zero range, beam-major: xyz (XYZLut), fields, times."""
    core, pcap = sdk
    meta = path.with_suffix(".json")
    meta.write_text(json.dumps(doc))
    out = []
    for frames in pcap.PcapFrameSetSource(str(path), meta=[str(meta)]):
        scan = frames[0]
        lut = core.XYZLut(core.SensorInfo(json.dumps(doc)))
        fields = set(scan.fields)
        for r, suffix in enumerate(("", "2")):
            if "RANGE" + suffix not in fields:
                continue
            rng = scan.field("RANGE" + suffix)
            keep = rng > 0
            xyz = lut(rng)
            h, w = rng.shape
            u, m = np.nonzero(keep)
            out.append({"xyz": xyz[keep], "ring": u, "column": m, "ret": np.full(len(u), r),
                        "refl": scan.field("REFLECTIVITY" + suffix)[keep],
                        "nir": scan.field("NEAR_IR")[keep],
                        "signal": scan.field("SIGNAL" + suffix)[keep] if "SIGNAL" + suffix in fields else None,
                        "t": np.asarray(scan.timestamp)[m]})
    return out


@pytest.mark.parametrize("h, profile", [(16, "LEGACY"), (32, "RNG19_RFL8_SIG16_NIR16"),
                                        (64, "RNG19_RFL8_SIG16_NIR16_DUAL"), (128, "RNG15_RFL8_NIR8"),
                                        (128, "RNG19_RFL8_SIG16_NIR16")])
@pytest.mark.parametrize("legacy_metadata", [False, True])
def test_profiles_match_ouster_sdk(sdk, tmp_path, h, profile, legacy_metadata):
    doc = _doc(h, profile, w=512)
    path = tmp_path / "o.pcap"
    _sdk_capture(sdk, doc, 2, path)
    meta_doc = _legacy(doc) if legacy_metadata else doc
    meta_path = tmp_path / "meta.json"
    meta_path.write_text(json.dumps(meta_doc))
    sweeps, rep = read_ouster_pcap(path, meta_path)
    assert rep.decoded == rep.packets == 64 and rep.sweeps == 2 and rep.time_source == "sensor"
    peer = _sdk_points(sdk, meta_doc, path)
    n_ret = PROFILES[profile][1]
    for k, s in enumerate(sweeps):
        parts = peer[k * n_ret:(k + 1) * n_ret]
        p = {key: (None if parts[0][key] is None else np.concatenate([q[key] for q in parts])) for key in parts[0]}
        t = s.timestamp_ns + s.time_offset_ns
        column = (t - T0) // COLUMN_NS - k * 512
        o = np.lexsort((s.return_index, column, s.ring))
        e = np.lexsort((p["ret"], p["column"], p["ring"]))
        assert len(s) == len(p["ring"]) > 0
        np.testing.assert_array_equal(s.ring[o], p["ring"][e])
        np.testing.assert_array_equal(column[o], p["column"][e])
        np.testing.assert_array_equal(s.return_index[o], p["ret"][e])
        np.testing.assert_array_equal(s.intensity[o], p["refl"][e])
        np.testing.assert_array_equal(s.extra["near_ir"][o], p["nir"][e])
        np.testing.assert_array_equal(t[o], p["t"][e])
        if p["signal"] is None:
            assert "signal" not in s.extra
        else:
            np.testing.assert_array_equal(s.extra["signal"][o], p["signal"][e])
        assert np.abs(s.xyz[o] - p["xyz"][e]).max() < 1e-3  # 1 mm (float32 storage: ~10 µm)


def test_free_running_clock_is_fitted(sdk, tmp_path):
    """Column stamps counted from power-up (internal oscillator): mapped onto the capture clock."""
    doc = _doc(16, "RNG19_RFL8_SIG16_NIR16", w=512)
    path = tmp_path / "o.pcap"
    _sdk_capture(sdk, doc, 3, path, time0=123_456_789_000)
    sweeps, rep = read_ouster_pcap(path, parse_ouster_metadata(doc))
    assert rep.time_source == "sensor_fit"
    t = np.concatenate([s.timestamp_ns + s.time_offset_ns for s in sweeps])
    # the recorder stamped each packet 40 µs after its first column (record times in whole µs):
    # the fit puts every column there, to the µs
    late = (t - T0) % COLUMN_NS - 40_000
    assert np.all(np.abs(late) < 1000) and abs(int(t.min()) - (T0 + 40_000)) < 1000
    raw, rep_raw = read_ouster_pcap(path, parse_ouster_metadata(doc), time_source="sensor")
    assert rep_raw.time_source == "sensor" and raw[0].timestamp_ns == 123_456_789_000


# ---------------------------------------------------------------- NumPy packets, formula, bad input
def _np_packets(doc: dict, ranges_mm: np.ndarray, frame: int = 0, status: int = 1, sn: int = 0) -> np.ndarray:
    """``(P, S) uint8`` RNG19_RFL8_SIG16_NIR16 packets (the published layout) of one frame:
    ``ranges_mm`` ``(W, H)``, reflectivity = beam index, column stamps ``T0 + m * COLUMN_NS``."""
    fmt = doc["lidar_data_format"]
    h, w, cpp = fmt["pixels_per_column"], fmt["columns_per_frame"], fmt["columns_per_packet"]
    col = 12 + 12 * h
    out = np.zeros((w // cpp, 64 + cpp * col), np.uint8)
    out[:, 2:4] = np.frombuffer(np.uint16(frame).tobytes(), np.uint8)
    out[:, 7:12] = np.frombuffer(int(sn).to_bytes(5, "little"), np.uint8)
    for p in range(w // cpp):
        for c in range(cpp):
            m = p * cpp + c
            at = 32 + c * col
            out[p, at:at + 8] = np.frombuffer(np.int64(T0 + m * COLUMN_NS).tobytes(), np.uint8)
            out[p, at + 8:at + 10] = np.frombuffer(np.uint16(m).tobytes(), np.uint8)
            out[p, at + 10] = status
            px = out[p, at + 12:at + col].reshape(h, 12)
            px[:, 0:4] = np.asarray(ranges_mm[m], "<u4").view(np.uint8).reshape(h, 4)
            px[:, 4] = np.arange(h)
    return out


def _reference_xyz(doc: dict, m: np.ndarray, u: np.ndarray, r_mm: np.ndarray) -> np.ndarray:
    """Ouster's sensor-data docs: beam direction from the encoder and beam angles, the beam
    origin ``n`` mm out along the encoder direction, then lidar_to_sensor (mm -> m)."""
    w = doc["lidar_data_format"]["columns_per_frame"]
    n = doc["beam_intrinsics"]["lidar_origin_to_beam_origin_mm"]
    theta_e = 2 * np.pi * (1 - m / w)
    theta_a = -np.radians(np.asarray(doc["beam_intrinsics"]["beam_azimuth_angles"])[u])
    phi = np.radians(np.asarray(doc["beam_intrinsics"]["beam_altitude_angles"])[u])
    x = (r_mm - n) * np.cos(theta_e + theta_a) * np.cos(phi) + n * np.cos(theta_e)
    y = (r_mm - n) * np.sin(theta_e + theta_a) * np.cos(phi) + n * np.sin(theta_e)
    z = (r_mm - n) * np.sin(phi)
    t = np.asarray(doc["lidar_intrinsics"]["lidar_to_sensor_transform"], float).reshape(4, 4)
    return (np.stack([x, y, z], 1) @ t[:3, :3].T + t[:3, 3]) / 1000.0


def _capture(packets: np.ndarray, port: int = 7502) -> bytes:
    return udp_pcap_bytes(packets, T0 + np.arange(len(packets), dtype=np.int64) * 1_562_500 + 30_000, dst_port=port)


def test_numpy_packets_and_formula_with_a_column_window(tmp_path):
    doc = _doc(16, "RNG19_RFL8_SIG16_NIR16", w=512, window=[400, 100])  # wraps through 0
    rng = np.random.default_rng(4)
    ranges = rng.integers(500, 90_000, (512, 16))
    ranges[rng.random(ranges.shape) < 0.2] = 0
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps(doc))
    sweep = read_ouster_sweep("<mem>", 0, metadata=meta, data=_capture(_np_packets(doc, ranges)))
    m = (sweep.timestamp_ns + sweep.time_offset_ns - T0) // COLUMN_NS
    assert np.all((m >= 400) | (m <= 100))
    inside = (np.arange(512) >= 400) | (np.arange(512) <= 100)
    assert len(sweep) == np.count_nonzero(ranges[inside])
    np.testing.assert_array_equal(sweep.intensity, sweep.ring)
    r = ranges[m, sweep.ring]
    np.testing.assert_allclose(sweep.xyz, _reference_xyz(doc, m, sweep.ring, r), atol=1e-4)
    # the legacy metadata of the same sensor reads the same
    legacy = parse_ouster_metadata(_legacy(doc))
    current = read_ouster_metadata(meta)
    for key in ("beam_altitude_deg", "beam_azimuth_deg", "beam_to_lidar_mm", "lidar_to_sensor_mm"):
        np.testing.assert_array_equal(getattr(legacy, key), getattr(current, key))
    assert (legacy.packet_size, legacy.column_window) == (current.packet_size, current.column_window)
    assert current.packet_size == 3328 and current.column_window == (400, 100)


def test_invalid_columns_other_sensors_and_ranges():
    doc = _doc(16, "RNG19_RFL8_SIG16_NIR16", w=512)
    ranges = np.full((512, 16), 10_000)
    good = _np_packets(doc, ranges, sn=992146000760)
    bad_status = _np_packets(doc, ranges, frame=1, status=0)
    other = _np_packets(doc, ranges, frame=2, sn=1234)
    meta = parse_ouster_metadata(doc)
    sweeps, rep = read_ouster_pcap("<mem>", meta, data=_capture(np.concatenate([good, bad_status, other])))
    assert rep.packets == 96 and rep.decoded == 64 and rep.dropped["prod_sn"] == 32
    assert len(sweeps) == 1 and len(sweeps[0]) == 512 * 16  # frame 1: no valid column
    empty, _ = read_ouster_pcap("<mem>", meta, data=_capture(good), min_range_m=10.001)
    assert empty == []
    (kept,), _ = read_ouster_pcap("<mem>", meta, data=_capture(good), min_range_m=9.999, max_range_m=10.0)
    assert len(kept) == 512 * 16


_BAD_METADATA = [
    (lambda d: d["beam_intrinsics"].pop("beam_altitude_angles"), "beam_intrinsics.beam_altitude_angles"),
    (lambda d: d["beam_intrinsics"]["beam_azimuth_angles"].pop(), "beam_azimuth_angles: 16 finite"),
    (lambda d: d["beam_intrinsics"]["beam_altitude_angles"].__setitem__(3, float("nan")), "beam_altitude_angles"),
    (lambda d: d["lidar_data_format"].__setitem__("udp_profile_lidar", "FIVE_WORD_PIXEL"), "udp_profile_lidar"),
    (lambda d: d["lidar_data_format"].__setitem__("pixels_per_column", 300), "pixels_per_column"),
    (lambda d: d["lidar_data_format"].__setitem__("column_window", [0, 4096]), "column_window[1]"),
    (lambda d: d["lidar_data_format"].__setitem__("header_type", "FUSA"), "header_type"),
    (lambda d: d["lidar_intrinsics"].__setitem__("lidar_to_sensor_transform", [1, 0, 0]), "lidar_to_sensor_transform"),
    (lambda d: d.pop("lidar_intrinsics"), "lidar_intrinsics objects"),
]


@pytest.mark.parametrize("spoil, what", _BAD_METADATA)
def test_bad_metadata_raises_naming_the_field(tmp_path, spoil, what):
    doc = copy.deepcopy(_doc(16, "RNG19_RFL8_SIG16_NIR16"))
    spoil(doc)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=what.replace("[", r"\[").replace("]", r"\]")) as e:
        read_ouster_metadata(path)
    assert e.value.path == str(path)


def test_unreadable_metadata_and_wrong_or_truncated_packets(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(FormatError, match="valid JSON"):
        read_ouster_metadata(path)
    doc = _doc(16, "RNG19_RFL8_SIG16_NIR16", w=512)
    packets = _np_packets(doc, np.full((512, 16), 5000))
    legacy = parse_ouster_metadata({**doc, "lidar_data_format": {**doc["lidar_data_format"],
                                                                 "udp_profile_lidar": "LEGACY"}})
    with pytest.raises(FormatError, match=r"3392-byte lidar packets \(LEGACY.*3328 B x32"):
        read_ouster_pcap("cap.pcap", legacy, data=_capture(packets))
    with pytest.raises(FormatError, match="3328-byte lidar packets"):
        read_ouster_pcap("cap.pcap", parse_ouster_metadata(doc), data=_capture(packets[:, :3000]))
    # a capture whose lidar packets were cut short by the snap length: their headers overrun the record
    data = bytearray(_capture(packets[:2]))
    rec = 16 + 42 + 3328
    for k in range(2):
        at = 24 + k * rec
        data[at + 8:at + 12] = (200).to_bytes(4, "little")
    cut = bytes(data[:24]) + b"".join(bytes(data[24 + k * rec:24 + k * rec + 16 + 200]) for k in range(2))
    with pytest.raises(FormatError, match="malformed_headers"):
        read_ouster_pcap("cap.pcap", parse_ouster_metadata(doc), data=cut)
    with pytest.raises(ValueError, match="time_source"):
        read_ouster_pcap("cap.pcap", parse_ouster_metadata(doc), data=_capture(packets), time_source="gps")


def test_sweep_columns():
    doc = _doc(16, "RNG19_RFL8_SIG16_NIR16", w=512)
    s = read_ouster_sweep("<mem>", metadata=parse_ouster_metadata(doc),
                          data=_capture(_np_packets(doc, np.full((512, 16), 7000))))
    assert isinstance(s, Sweep) and s.frame == "lidar" and s.time_offset_ns.min() == 0
    assert sorted(s.extra) == ["near_ir", "signal"] and s.return_index.max() == 0
    # 7 m from the beam origins, which sit 15.8 mm out from the axis, 36.18 mm above the sensor origin
    d = np.linalg.norm(s.xyz - [0.0, 0.0, 0.03618], axis=1)
    assert np.all((d > 7.0 - 2 * 0.0158) & (d < 7.0001))
    with pytest.raises(FormatError, match="sweep 3"):
        read_ouster_sweep("<mem>", 3, metadata=parse_ouster_metadata(doc),
                          data=_capture(_np_packets(doc, np.full((512, 16), 7000))))


def test_raw_log_stream_decodes_as_the_capture(tmp_path):
    """An ``ouster_pcap`` stream in a raw log: each frame's window of packets decodes to the
    capture's points (times from the whole stream's clock), in the log's frames."""
    from formats.raw_log import read_log
    from tests.stream_log import frame_points, write_stream_log

    doc = _doc(16, "RNG19_RFL8_SIG16_NIR16", w=512)
    rng = np.random.default_rng(8)
    ranges = rng.integers(500, 50_000, (512, 16))
    data = _capture(np.concatenate([_np_packets(doc, ranges, frame=f) for f in range(2)]))
    sweeps, _ = read_ouster_pcap("<mem>", parse_ouster_metadata(doc), data=data)
    mid = T0 + 32 * 1_562_500  # between the two frames' packets
    root = write_stream_log(tmp_path, "ouster_pcap", data, ("L.json", json.dumps(doc).encode()),
                            [(T0 - 10**6, mid), (mid, T0 + 10**9)])
    frames = frame_points(root)
    for got, want in zip(frames, sweeps):
        assert len(got["xyz"]) == len(want) > 0 and np.all(got["sensor_id"] == 3)
        np.testing.assert_allclose(got["xyz"], want.xyz, atol=1e-6)
        np.testing.assert_array_equal(got["ring"], want.ring)
    manifest = tmp_path / "log.json"
    manifest.write_text(manifest.read_text().replace(', "calibration": "lidar/L.json"', ""))
    with pytest.raises(FormatError, match=r"lidars\[0\].calibration"):
        read_log(tmp_path)
