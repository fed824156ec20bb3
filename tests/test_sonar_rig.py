"""Marine rig round trip: simulate → write KMALL → read → georeference, against ground truth."""

from __future__ import annotations

import io

import numpy as np
import pytest

from engine import quaternion as quat
from engine.geodesy import Origin
from engine.georeference import fls_image_to_points, soundings_to_world, vessel_pose_track, vessel_to_ego
from engine.sim.vessel import HIT_PIPE, HIT_SEABED, HIT_WRECK, simulate_survey
from formats.kmall import MrzPings, SkmSamples, read_kmall, read_kmall_world, write_kmall


@pytest.fixture(scope="module")
def run():
    return simulate_survey(seed=0, num_pings=12, beams=96)


@pytest.fixture(scope="module")
def log(run):
    buf = io.BytesIO()
    write_kmall(buf, MrzPings(**run.mrz), SkmSamples(**run.skm), max_datagram_bytes=4096)
    return read_kmall(buf.getvalue())


def test_round_trip_recovers_seabed_within_1cm(run, log):
    placed = read_kmall_world(log, run.origin)
    sweep, world = placed.sweep, placed.xyz_world
    keep = log.pings.detection_type != 2
    truth = run.truth_hit[keep]
    obj = run.truth_object[keep]
    assert not np.isnan(truth).any()
    err = np.linalg.norm(world - truth, axis=1)
    assert err.max() < 0.01
    seabed = obj == HIT_SEABED
    z_true = run.seabed.height(world[seabed, 0], world[seabed, 1])
    assert np.abs(world[seabed, 2] - z_true).max() < 0.01
    assert (obj == HIT_WRECK).sum() > 10 and (obj == HIT_PIPE).sum() > 5
    # float32 storage relative to the origin keeps sub-millimetre positions here
    np.testing.assert_allclose(sweep.xyz, world, atol=1e-4)
    ping = log.pings.ping_of_sounding[keep]
    np.testing.assert_array_equal(sweep.time_offset_ns, log.pings.time_ns[ping] - log.pings.time_ns[0])
    np.testing.assert_array_equal(sweep.extra["ping_index"], ping)


def test_rejected_soundings_never_drawn(run, log):
    rejected = log.pings.detection_type == 2
    assert rejected.sum() > 10
    sweep = read_kmall_world(log, run.origin).sweep
    assert sweep.xyz[:, 2].max() < -10  # the bogus z = 500 m soundings are gone
    flagged_world = read_kmall_world(log, run.origin, include_rejected=True)
    flagged = flagged_world.sweep
    assert len(flagged) == log.pings.num_soundings and np.all(flagged.extra["detection_type"][rejected] == 2)


def test_pose_track_from_skm_matches_truth(run, log):
    a = log.attitude
    track = vessel_pose_track(a.time_ns, a.latitude_deg, a.longitude_deg, a.ellipsoid_height_m,
                              a.roll_deg, a.pitch_deg, a.heading_deg, run.origin)
    poses = track.interpolate(log.pings.time_ns)
    assert quat.angle_between(poses.rotation, run.truth_rotation).max() < 1e-5
    np.testing.assert_allclose(poses.translation, run.truth_translation, atol=1e-3)
    # heave path: constant height above the waterline, heave positive down
    heave_track = vessel_pose_track(a.time_ns, a.latitude_deg, a.longitude_deg, run.origin.alt_m + 1.0,
                                    a.roll_deg, a.pitch_deg, a.heading_deg, run.origin, heave_m=a.heave_m)
    np.testing.assert_allclose(heave_track.interpolate(log.pings.time_ns).translation, run.truth_translation,
                               atol=1e-3)


def test_attitude_sign_conventions():
    """Independent of the rig: port-up roll lifts ego +y, bow-up pitch lifts ego +x,
    heading 90° points ego +x east."""
    o = Origin(10.0, 20.0)
    t = np.array([0, 1])
    def axes(roll, pitch, heading):
        tr = vessel_pose_track(t, np.full(2, 10.0), np.full(2, 20.0), np.zeros(2), np.full(2, roll),
                               np.full(2, pitch), np.full(2, heading), o)
        return quat.to_matrix(tr.rotation[0])
    r = axes(0.0, 0.0, 90.0)
    np.testing.assert_allclose(r[:, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(r[:, 1], [0, 1, 0], atol=1e-12)
    assert axes(5.0, 0.0, 0.0)[2, 1] == pytest.approx(np.sin(np.radians(5.0)))
    assert axes(0.0, 5.0, 0.0)[2, 0] == pytest.approx(np.sin(np.radians(5.0)))


def test_soundings_to_world_matches_numpy_reference():
    """Small offsets near the origin: world ≈ tangent-plane rotation by heading (NumPy)."""
    o = Origin(45.0, 7.0, 0.0)
    rng = np.random.default_rng(0)
    heading = np.array([0.0, 90.0, 225.0])
    x, y, z = (rng.uniform(-20, 20, 9).astype(np.float32) for _ in range(3))
    start = np.array([0, 3, 6, 9])
    w = soundings_to_world(np.full(3, 45.0), np.full(3, 7.0), heading, np.zeros(3), np.full(3, 0.5), start,
                           x, y, z, o)
    h = np.radians(np.repeat(heading, 3))
    ref = np.stack([x * np.sin(h) + y * np.cos(h), x * np.cos(h) - y * np.sin(h), 0.5 - z], axis=1)
    np.testing.assert_allclose(w, ref, atol=1e-4)  # curvature over 30 m: < 0.1 mm
    with pytest.raises(ValueError, match="heading_deg"):
        soundings_to_world(np.full(3, 45.0), np.full(3, 7.0), heading[:2], np.zeros(3), np.zeros(3), start,
                           x, y, z, o)
    with pytest.raises(ValueError, match="sounding_start"):
        soundings_to_world(np.full(3, 45.0), np.full(3, 7.0), heading, np.zeros(3), np.zeros(3), start[:3],
                           x, y, z, o)
    np.testing.assert_array_equal(vessel_to_ego(np.array([[1.0, 2.0, 3.0]])), [[1.0, -2.0, -3.0]])


def test_fls_points_bracket_truth(run):
    xyz, inten, row, col = fls_image_to_points(run.fls_image, run.fls_bearings_deg, run.fls_range_resolution_m, 40)
    assert len(xyz) > 100 and np.all(xyz[:, 2] == 0)
    res = run.fls_range_resolution_m
    rng = np.hypot(xyz[:, 0], xyz[:, 1])
    for b, truth in enumerate(run.fls_truth_range_m):
        if np.isnan(truth):
            continue
        mine = rng[col == b]
        assert mine.min() <= truth + res and mine.max() >= truth - res
    bearing = np.degrees(np.arctan2(-xyz[:, 1], xyz[:, 0]))
    np.testing.assert_allclose(bearing, run.fls_bearings_deg[col], atol=1e-3)
