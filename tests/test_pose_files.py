"""Pose files (GNSS/INS CSV, KITTI oxts directory, nuScenes ego_pose.json) against the
synthetic rig's GNSS trajectory, and every bad-input path → FormatError."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from engine import quaternion as quat
from engine.geodesy import Origin, enu_rotation, enu_to_geodetic
from engine.pose_sources import Q_ENU_FROM_NED, Q_FRD_FROM_FLU
from formats.errors import FormatError
from formats.pose_files import read_gnss_csv, read_kitti_oxts, read_nuscenes_ego_poses

ORIGIN = Origin(49.01, 8.43, 112.0)  # Karlsruhe, as KITTI


@pytest.fixture(scope="module")
def truth(drive):
    """The rig's GNSS poses (100 Hz, ENU around ORIGIN) on whole microseconds, and the same
    poses as geodetic positions and local-level orientations (inverting engine.geodesy)."""
    ts = (drive.gnss.timestamps_ns // 1000) * 1000
    poses = drive.gnss.interpolate(ts)
    lat, lon, alt = enu_to_geodetic(poses.translation, ORIGIN)
    q_local = np.stack([
        quat.multiply(quat.from_matrix(enu_rotation(la, lo) @ ORIGIN.enu_from_ecef.T), q)
        for la, lo, q in zip(lat, lon, poses.rotation)
    ])
    return ts, poses, lat, lon, alt, q_local


def _assert_track(track, ts, poses):
    np.testing.assert_array_equal(track.timestamps_ns, ts)
    assert np.abs(track.translation - poses.translation).max() < 1e-3
    assert quat.angle_between(track.rotation, poses.rotation).max() < 1e-6


def _csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def _g(v):
    return f"{v:.17g}"


def test_gnss_csv_enu_round_trip(truth, tmp_path):
    ts, poses, lat, lon, alt, q_local = truth
    rpy = np.degrees(quat.to_euler_zyx(q_local))
    rows = [[str(t), _g(a), _g(b), _g(c), _g(r), _g(p), _g(y), "fix"]
            for t, a, b, c, (r, p, y) in zip(ts, lat, lon, alt, rpy)]
    path = _csv(tmp_path / "ins.csv", ["timestamp_ns", "lat_deg", "lon_deg", "alt_m", "roll_deg", "pitch_deg",
                                        "yaw_deg", "status"], rows)
    track, origin = read_gnss_csv(path, "enu", ORIGIN)
    assert origin == ORIGIN
    _assert_track(track, ts, poses)
    # the default origin is the first sample
    track, origin = read_gnss_csv(path, "enu")
    assert (origin.lat_deg, origin.lon_deg) == (lat[0], lon[0])
    np.testing.assert_allclose(track.translation[0], 0.0, atol=1e-9)


def test_gnss_csv_ned_seconds_radians_any_order(truth, tmp_path):
    ts, poses, lat, lon, alt, q_local = truth
    # NED heading/pitch/roll of the same attitude: q_local = q_enu_ned ⊗ q_ned_frd ⊗ q_frd_flu
    q_ned = quat.multiply(quat.multiply(quat.conjugate(Q_ENU_FROM_NED), q_local), quat.conjugate(Q_FRD_FROM_FLU))
    rpy = quat.to_euler_zyx(q_ned)
    secs = [f"{t // 10**9}.{t % 10**9:09d}" for t in ts]
    rows = [[_g(y), s, _g(b), _g(a), _g(r), _g(c), _g(p)]
            for s, a, b, c, (r, p, y) in zip(secs, lat, lon, alt, rpy)]
    path = tmp_path / "ins.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv(tmp_path / "x.csv", [" yaw_rad", "time_s", "lon_deg", "lat_deg",
                                                                  "roll_rad", "alt_m", "pitch_rad "],
                                              rows).read_bytes().replace(b"\n", b"\r\n", 3))
    track, _ = read_gnss_csv(path, "ned", ORIGIN)
    _assert_track(track, ts, poses)
    # read with the other convention, the same numbers give other rotations
    wrong, _ = read_gnss_csv(path, "enu", ORIGIN)
    assert quat.angle_between(wrong.rotation, poses.rotation).max() > 0.1


def test_kitti_oxts_directory(truth, tmp_path):
    ts, poses, lat, lon, alt, q_local = truth
    ts, poses, lat, lon, alt, q_local = (x[::10] for x in (ts, poses, lat, lon, alt, q_local))  # 10 Hz
    rpy = quat.to_euler_zyx(q_local)
    d = tmp_path / "2011_09_26_drive_0001_sync" / "oxts"
    (d / "data").mkdir(parents=True)
    stamps = []
    for i, t in enumerate(ts):
        values = [lat[i], lon[i], alt[i], *rpy[i], *np.linspace(0.1, 2.4, 19), 4, 11, 2, 2, 1]  # 30 values
        (d / "data" / f"{i:010d}.txt").write_text(" ".join(_g(v) for v in values) + "\n")
        day = datetime.fromtimestamp(int(t) // 10**9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        stamps.append(f"{day}.{int(t) % 10**9:09d}")
    (d / "timestamps.txt").write_text("\n".join(stamps) + "\n")
    assert stamps[0].count(":") == 2 and len(stamps[0]) == len("2011-09-26 13:02:25.964389445")
    track, origin = read_kitti_oxts(d, ORIGIN)
    _assert_track(track, ts, poses)
    assert read_kitti_oxts(d)[1].lat_deg == lat[0]


def _ego_pose_records(ts, poses):
    return [{"token": f"ep{i:04d}", "timestamp": int(t) // 1000, "rotation": [float(x) for x in q],
             "translation": [float(x) for x in p]}
            for i, (t, q, p) in enumerate(zip(ts, poses.rotation, poses.translation))]


def test_nuscenes_ego_pose_json(truth, tmp_path):
    ts, poses = truth[0], truth[1]
    recs = _ego_pose_records(ts, poses)
    other = {"token": "other-log", "timestamp": 1, "rotation": [1.0, 0, 0, 0], "translation": [9e3, 0.0, 0.0]}
    shuffled = [recs[i] for i in np.random.default_rng(2).permutation(len(recs))]
    path = tmp_path / "ego_pose.json"
    path.write_text(json.dumps(shuffled + [dict(recs[3], token="same-pose-again"), other]))
    track = read_nuscenes_ego_poses(path, tokens=[r["token"] for r in recs] + ["same-pose-again"])
    _assert_track(track, ts, poses)
    everything = read_nuscenes_ego_poses(path)
    assert len(everything) == len(recs) + 1 and everything.timestamps_ns[0] == 1000


# ---------------------------------------------------------------- bad input

HEADER = ["timestamp_ns", "lat_deg", "lon_deg", "alt_m", "roll_deg", "pitch_deg", "yaw_deg"]
ROW = ["1000", "49.0", "8.4", "110", "0.5", "-0.2", "30"]


@pytest.mark.parametrize("header, rows, match", [
    (HEADER[:3] + HEADER[4:], [ROW[:3] + ROW[4:]], r"line 1 \(header\).*'alt_m'"),
    (HEADER + ["time_s"], [ROW + ["1.0"]], r"line 1 \(header\): exactly one time column"),
    (HEADER[:4] + ["roll_deg", "roll_rad", "pitch_deg", "yaw_deg"], [ROW[:5] + ROW[4:]], r"exactly one roll"),
    (HEADER + ["lat_deg"], [ROW + ["1"]], r"distinct column names"),
    (HEADER, [ROW, ["2000", "49.0", "8.4", "abc", "0", "0", "0"]], r"line 3, column 'alt_m': a number, got 'abc'"),
    (HEADER, [ROW, ["2000", "49.0", "nan", "1", "0", "0", "0"]], r"line 3, column 'lon_deg': a finite number"),
    (HEADER, [ROW, ["2000", "49.0", "8.4", "1", "0", "0"]], r"line 3: 7 comma-separated values, got 6"),
    (HEADER, [ROW, ["2000.5", "49.0", "8.4", "1", "0", "0", "0"]], r"line 3, column 'timestamp_ns': integer"),
    (HEADER, [ROW, ["900", "49.0", "8.4", "1", "0", "0", "0"]],
     r"line 3: times strictly increasing, got a time earlier"),
    (HEADER, [ROW, ROW], r"line 3: times strictly increasing, got a duplicate time"),
    (HEADER, [ROW, ["2000", "95.0", "8.4", "1", "0", "0", "0"]], r"line 3, column 'lat_deg': a latitude"),
    (["time_s"] + HEADER[1:], [["1.0000000001"] + ROW[1:]], r"line 2, column 'time_s': decimal seconds"),
    (["time_s"] + HEADER[1:], [["-1.5"] + ROW[1:]], r"line 2, column 'time_s'"),
    (HEADER, [], r"at least one data line"),
])
def test_gnss_csv_errors(tmp_path, header, rows, match):
    path = _csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(FormatError, match=match) as err:
        read_gnss_csv(path, "ned")
    assert err.value.path == str(path)


def test_gnss_csv_error_offsets_and_files(tmp_path):
    path = _csv(tmp_path / "bad.csv", HEADER, [ROW, ["2000", "x"] + ROW[2:]])
    with pytest.raises(FormatError) as err:
        read_gnss_csv(path, "enu")
    assert err.value.offset == len(",".join(HEADER)) + 1 + len(",".join(ROW)) + 1
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(FormatError, match="a header line"):
        read_gnss_csv(tmp_path / "empty.csv", "enu")
    with pytest.raises(FormatError, match="a readable file"):
        read_gnss_csv(tmp_path / "missing.csv", "enu")
    (tmp_path / "latin1.csv").write_bytes(b"timestamp_ns,lat_deg\n1,\xe9\n")
    with pytest.raises(FormatError, match="line 2: UTF-8"):
        read_gnss_csv(tmp_path / "latin1.csv", "enu")
    with pytest.raises(ValueError, match="yaw_convention"):
        read_gnss_csv(path, "nwu")


def _oxts_dir(tmp_path, n=3, stamps=None, rows=None):
    d = tmp_path / "oxts"
    (d / "data").mkdir(parents=True, exist_ok=True)
    row = " ".join(["49.0", "8.4", "110", "0.01", "0.02", "0.3"] + ["0"] * 24)
    for i in range(n):
        (d / "data" / f"{i:010d}.txt").write_text((rows or {}).get(i, row) + "\n")
    stamps = stamps or [f"2011-09-26 13:02:25.{i:09d}" for i in range(n)]
    (d / "timestamps.txt").write_text("\n".join(stamps) + "\n")
    return d


@pytest.mark.parametrize("stamps, rows, where, match", [
    (None, {1: "49.0 8.4 110 0 0 0"}, "data/0000000001.txt", r"30 oxts fields, got 6"),
    (None, {2: "49.0 8.4 x " + "0 " * 27}, "data/0000000002.txt", r"oxts row: numbers"),
    (None, {0: "49.0 nan " + "0 " * 28}, "data/0000000000.txt", r"oxts row: finite numbers"),
    (None, {0: "91.0 8.4 " + "0 " * 28}, "data/0000000000.txt", r"field 0 \(lat\): a latitude"),
    (None, {1: ("49 8.4 " + "0 " * 28 + "\n") * 2}, "data/0000000001.txt", r"one oxts line, got 2"),
    (["2011-09-26 13:02:25.1", "2011-09-26 13:02:25.3", "2011-09-26 13:02:25.2"], None, "timestamps.txt",
     r"line 3: times strictly increasing, got a time earlier"),
    (["2011-09-26 13:02:25.1", "2011-09-26 13:02:25.100", "2011-09-26 13:02:25.2"], None, "timestamps.txt",
     r"line 2: times strictly increasing, got a duplicate"),
    (["2011-09-26 13:02:25.1", "2011/09/26 13:02:25.2", "2011-09-26 13:02:25.3"], None, "timestamps.txt",
     r"a timestamp YYYY-MM-DD HH:MM:SS.fffffffff"),
    (["2011-09-26 13:02:25.1", "2011-09-26 13:02:25.2"], None, "timestamps.txt", r"one timestamp per oxts file"),
])
def test_kitti_oxts_errors(tmp_path, stamps, rows, where, match):
    d = _oxts_dir(tmp_path, stamps=stamps, rows=rows)
    with pytest.raises(FormatError, match=match) as err:
        read_kitti_oxts(d)
    assert err.value.path == str(d / where)


def test_kitti_oxts_file_names(tmp_path):
    d = _oxts_dir(tmp_path)
    (d / "data" / "0000000001.txt").rename(d / "data" / "0000000007.txt")
    with pytest.raises(FormatError, match=r"expected 0000000001.txt") as err:
        read_kitti_oxts(d)
    assert err.value.path == str(d / "data" / "0000000002.txt")  # sorted: 0, 2, 7
    with pytest.raises(FormatError, match="a readable file"):
        read_kitti_oxts(tmp_path / "nowhere")


GOOD = {"token": "a", "timestamp": 10, "rotation": [1.0, 0.0, 0.0, 0.0], "translation": [1.0, 2.0, 3.0]}


@pytest.mark.parametrize("records, match", [
    ([GOOD, {k: v for k, v in GOOD.items() if k != "rotation"} | {"token": "b", "timestamp": 20}],
     r"record 1 \(token 'b'\), field 'rotation': a list of 4"),
    ([GOOD | {"translation": [1.0, 2.0]}], r"record 0 \(token 'a'\), field 'translation': a list of 3"),
    ([GOOD | {"translation": [1.0, "2", 3.0]}], r"field 'translation': a list of 3 finite numbers"),
    ([GOOD | {"translation": [1.0, float("nan"), 3.0]}], r"field 'translation': a list of 3 finite numbers"),
    ([GOOD | {"timestamp": 10.5}], r"field 'timestamp': non-negative integer microseconds"),
    ([GOOD | {"rotation": [2.0, 0.0, 0.0, 0.0]}], r"field 'rotation': a unit quaternion"),
    ([GOOD, GOOD | {"token": "c", "translation": [1.0, 2.0, 3.5]}],
     r"record 1 \(token 'c'\), field 'timestamp': one pose per time, but record 0 \(token 'a'\)"),
    ([GOOD, "x"], r"record 1: a JSON object"),
    ([], r"at least one ego_pose record"),
])
def test_nuscenes_ego_pose_errors(tmp_path, records, match):
    path = tmp_path / "ego_pose.json"
    path.write_text(json.dumps(records))
    with pytest.raises(FormatError, match=match) as err:
        read_nuscenes_ego_poses(path)
    assert err.value.path == str(path)


def test_nuscenes_ego_pose_file_errors(tmp_path):
    path = tmp_path / "ego_pose.json"
    path.write_text('[{"token": "a", "timestamp": 1,]')
    with pytest.raises(FormatError, match="valid JSON") as err:
        read_nuscenes_ego_poses(path)
    assert err.value.offset == path.read_text().index("]")
    path.write_text(json.dumps({"token": "a"}))
    with pytest.raises(FormatError, match="a JSON list"):
        read_nuscenes_ego_poses(path)
    path.write_text(json.dumps([GOOD]))
    with pytest.raises(FormatError, match=r"records with tokens \['zz'\]"):
        read_nuscenes_ego_poses(path, tokens=["a", "zz"])
