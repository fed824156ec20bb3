"""SFS CuboidPath conversion: round trips, scale_sensor_fusion_io's own conventions, lerp vs slerp."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid import CORNER_SIGNS, CuboidTrack, box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.errors import FormatError
from formats.sfs_cuboids import cuboids_from_sfs_values, cuboids_to_sfs_values, track_from_sfs, track_to_sfs

sfio = pytest.importorskip("scale_sensor_fusion_io")
from scale_sensor_fusion_io.model_converters.sfs import from_annotations_sfs  # noqa: E402
from scale_sensor_fusion_io.models import CuboidPath as ModelCuboidPath  # noqa: E402
from scale_sensor_fusion_io.spec import SFS  # noqa: E402


def _random_values(rng, k, degrees=False):
    v = np.empty((k, 9))
    v[:, :3] = rng.uniform(0.2, 12, (k, 3))
    v[:, 3:6] = rng.uniform(-500, 500, (k, 3))
    v[:, 6] = rng.uniform(-np.pi, np.pi, k)
    v[:, 7] = rng.uniform(-1.5, 1.5, k)  # away from gimbal lock, where Euler angles are not unique
    v[:, 8] = rng.uniform(-np.pi, np.pi, k)
    if degrees:
        v[:, 6:] = np.rad2deg(v[:, 6:])
    return v


def _annotation(rng, k=6):
    return {
        "id": "car-7", "type": "cuboid", "label": "car", "stationary": False,
        "path": {"timestamps": np.cumsum(rng.integers(1, 200_000, k)).tolist(),
                 "values": _random_values(rng, k).tolist()},
        "attributes": [
            {"name": "color", "timestamps": [0], "values": ["red"], "static": True},
            {"name": "occluded", "timestamps": [], "values": [], "static": False},
        ],
    }


def test_sfs_round_trip():
    ann = _annotation(np.random.default_rng(1))
    ts = ann["path"]["timestamps"]
    ann["attributes"][0]["timestamps"] = ts[:1]
    ann["attributes"][1].update(timestamps=[ts[1], ts[4]], values=["yes", "no"])
    track = track_from_sfs(ann)
    np.testing.assert_array_equal(track.timestamps_ns, np.array(ts) * 1000)
    assert track.attributes == {"color": "red"}
    assert track.keyframe_attributes[1] == {"occluded": "yes"} and track.keyframe_attributes[0] == {}
    back = track_to_sfs(track)
    assert back["path"]["timestamps"] == ts
    keys = ("id", "type", "label", "stationary")
    assert {k: back[k] for k in keys} == {k: ann[k] for k in keys}
    assert back["attributes"] == ann["attributes"]
    got, sent = np.array(back["path"]["values"]), np.array(ann["path"]["values"])
    np.testing.assert_array_equal(got[:, :6], sent[:, :6])  # sizes and centres: bit-exact
    np.testing.assert_allclose(np.angle(np.exp(1j * (got[:, 6:] - sent[:, 6:]))), 0.0, atol=1e-12)


def test_fathom_round_trip_nanoseconds_and_degrees():
    rng = np.random.default_rng(2)
    c, s, q = rng.normal(0, 50, (5, 3)), rng.uniform(0.1, 5, (5, 3)), quat.as_quaternions(rng.normal(size=(5, 4)))
    ts = np.cumsum(rng.integers(1, 10**9, 5))
    track = CuboidTrack("x", "truck", ts, c, s, q, stationary=True)
    for degrees in (False, True):
        back = track_from_sfs(track_to_sfs(track, "nanoseconds", degrees), "nanoseconds", degrees)
        np.testing.assert_array_equal(back.timestamps_ns, ts)
        np.testing.assert_array_equal(back.centers, c)
        np.testing.assert_array_equal(back.sizes, s)
        assert back.stationary and np.all(quat.angle_between(back.rotations, q) < 1e-12)
    # microseconds: ns times are rounded to the nearest microsecond
    assert track_to_sfs(CuboidTrack("y", "car", [1_499, 2_500], c[:2], s[:2], q[:2]))["path"]["timestamps"] == [1, 3]


def test_conventions_match_scale_sensor_fusion_io():
    """Dimension order and Euler convention as the package's own CuboidPath.as_matrix reads them."""
    rng = np.random.default_rng(3)
    values = _random_values(rng, 8, degrees=True)  # as_matrix reads degrees
    ann = SFS.CuboidAnnotation(id="a", path=SFS.CuboidPath(timestamps=list(range(8)), values=values.tolist()))
    matrix = from_annotations_sfs([ann])[0].path.as_matrix()  # (K, 4, 4): R · diag(dx, dy, dz), centre
    expected = np.einsum("kij,cj->kci", matrix[:, :3, :3], 0.5 * CORNER_SIGNS) + matrix[:, None, :3, 3]
    track = track_from_sfs(ann, degrees=True)
    np.testing.assert_allclose(box_corners(track.centers, track.sizes, track.rotations), expected, atol=1e-9)
    # and our values → their matrices agree for yaw-only boxes in radians-vs-degrees terms too
    yaw_only = np.zeros((3, 9))
    yaw_only[:, :3] = 1.0
    yaw_only[:, 8] = [0.3, -2.0, 3.1]
    _, _, rot = cuboids_from_sfs_values(yaw_only)
    np.testing.assert_allclose(rot, quat.from_yaw(yaw_only[:, 8]), atol=1e-15)


def test_scale_lerp_crosses_zero_where_slerp_crosses_pi():
    yaw = np.deg2rad([170.0, -170.0])
    values = np.zeros((2, 9))
    values[:, :3] = [4.0, 2.0, 1.5]
    values[:, 8] = yaw
    track = track_from_sfs({"id": "a", "path": {"timestamps": [0, 100], "values": values.tolist()}})
    ours = quat.to_euler_zyx(interpolate_tracks([track], np.array([50_000]), "none").rotations[0, 0])[2]
    # scale_sensor_fusion_io's model path: columns x y z yaw pitch roll dx dy dz, linear interpolation
    model = ModelCuboidPath(np.array([[0, 0, 0, y, 0, 0, 4.0, 2.0, 1.5] for y in yaw]), index=[0, 100])
    theirs = model.interpolate([50]).yaw.values[0]
    assert abs(abs(ours) - np.pi) < 1e-12  # through 180°
    assert abs(theirs) < 1e-12  # the long way, through 0°


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a["path"]["values"][2].__setitem__(0, -1.0), "non-negative"),
        (lambda a: a["path"]["values"][1].__setitem__(4, float("nan")), "finite"),
        (lambda a: a["path"]["values"][3].pop(), "rows of 9 numbers"),
        (lambda a: a["path"].__setitem__("values", [[1.0] * 8] * 6), r"\(K, 9\)"),
        (lambda a: a["path"]["timestamps"].__setitem__(2, a["path"]["timestamps"][1]), "increasing"),
        (lambda a: a["path"]["timestamps"].__setitem__(0, 0.5), "integers"),
        (lambda a: a["path"]["timestamps"].pop(), "one value row per timestamp"),
        (lambda a: a["attributes"][1].update(timestamps=[-5], values=["x"]), "on keyframes"),
        (lambda a: a.pop("path"), "path"),
        (lambda a: a.__setitem__("id", ""), "id"),
    ],
)
def test_bad_input_raises_format_error(change, match):
    ann = _annotation(np.random.default_rng(4))
    change(ann)
    with pytest.raises(FormatError, match=match) as info:
        track_from_sfs(ann)
    assert isinstance(info.value, ValueError)


def test_bad_arguments():
    ann = _annotation(np.random.default_rng(5))
    with pytest.raises(ValueError, match="time_unit"):
        track_from_sfs(ann, time_unit="seconds")
    merged = CuboidTrack("m", "car", [1000, 1001], np.zeros((2, 3)), np.ones((2, 3)), [[1.0, 0, 0, 0]] * 2)
    with pytest.raises(ValueError, match="merge"):
        track_to_sfs(merged)
    with pytest.raises(ValueError, match="as many"):
        cuboids_to_sfs_values(np.zeros((2, 3)), np.ones((3, 3)), [[1.0, 0, 0, 0]] * 2)
