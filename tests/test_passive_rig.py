"""The harbor rig's hull array: ships recovered at their bearings from the raw log, tonals in
their LOFAR bins, bearings as world rays through the ships and into a camera."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.passive.beamform import bearing_time_record
from engine.passive.bearings import BearingTrack, bearing_rays, distance_to_rays, ray_points
from engine.passive.spectra import lofargram
from engine.projection import project_points
from engine.se3 import SE3
from engine.sim.acoustic import _sinc_sample, band_noise
from formats.raw_log import read_log
from server.simulate import HYDROPHONE_GAIN_DB, write_harbor_log

AZIMUTHS = np.radians(np.arange(-180.0, 180.0, 1.0))
BAND = [[500.0, 2500.0]]


@pytest.fixture(scope="module", params=[10.0, 0.0], ids=["10dB", "0dB"])
def harbor(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"harbor{request.param:g}")
    log_dir, run = write_harbor_log(root / "log", seed=3, duration_s=6.0, beams=16, hydrophones=True,
                                    hydrophone_snr_db=request.param)
    return request.param, read_log(log_dir), run


def _two_peaks(power: np.ndarray) -> np.ndarray:
    """Azimuths of the two strongest local maxima of each frame's circular power, parabola-refined."""
    left, right = np.roll(power, 1, axis=1), np.roll(power, -1, axis=1)
    peaks = (power > left) & (power >= right)
    out = np.empty((len(power), 2))
    for f in range(len(power)):
        k = np.flatnonzero(peaks[f])
        k = k[np.argsort(power[f, k])[::-1][:2]]
        y0, y1, y2 = left[f, k], power[f, k], right[f, k]
        out[f] = AZIMUTHS[k] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (AZIMUTHS[1] - AZIMUTHS[0])
    return out


def test_sinc_resampling_of_band_limited_noise_is_accurate():
    x = band_noise(np.random.default_rng(0), (4000,), 8000.0, (100.0, 3000.0))
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(4000)  # cycles per sample: x is exactly this periodic sum of sinusoids
    pos = np.random.default_rng(1).uniform(200, 3800, 2000)
    exact = (spec[None, :] * np.exp(2j * np.pi * f[None, :] * pos[:, None])).real
    exact = (2 * exact[:, 1:-1].sum(axis=1) + exact[:, 0] + exact[:, -1]) / 4000
    assert np.abs(_sinc_sample(x, pos) - exact).max() < 2e-3 * np.abs(x).max()


def test_raw_log_holds_the_recording(harbor):
    _, log, run = harbor
    (hull,) = log.hydrophones
    rec = hull.read()
    p = run.passive
    assert rec.start_ns == p.start_ns and rec.sample_rate_hz == p.sample_rate_hz
    assert rec.samples.shape == p.samples.shape == (32, 48000)
    np.testing.assert_array_equal(hull.gains_db, HYDROPHONE_GAIN_DB)
    np.testing.assert_allclose(rec.samples, p.samples, atol=2 ** -22)  # 24-bit FLAC, gain removed
    np.testing.assert_allclose(hull.mount.positions_ego(), p.elements_vessel * [1, -1, -1])


@pytest.mark.parametrize("method", ["bartlett", "mvdr"])
def test_beamformer_recovers_each_ship_bearing(harbor, method):
    snr, log, run = harbor
    (hull,) = log.hydrophones
    rec = hull.read()
    btr = bearing_time_record(rec.samples, rec.sample_rate_hz, hull.mount.positions_ego(), AZIMUTHS, BAND,
                              start_ns=rec.start_ns, method=method)
    assert len(btr.times_ns) == 6
    peaks = _two_peaks(btr.power[:, 0])
    tolerance = 1.0 if snr >= 10 else 3.0
    for ship in run.passive.ships:
        truth = run.passive.truth(ship, btr.times_ns)["azimuth_rad"]
        err = np.degrees(np.angle(np.exp(1j * (peaks - truth[:, None]))))
        nearest = np.abs(err).min(axis=1)
        assert nearest.max() < tolerance, (ship.name, nearest)


def test_lofargram_shows_each_tonal_at_its_doppler_shifted_bin(harbor):
    _, log, run = harbor
    rec = log.hydrophones[0].read()
    lofar = lofargram(rec.samples.mean(axis=0), rec.sample_rate_hz, 1.0, overlap=0.5, average=11)
    for ship in run.passive.ships:
        mid = rec.start_ns + np.array([3_000_000_000])
        received = run.passive.truth(ship, mid)["tonal_hz"][0]
        assert abs(received - ship.tonal_hz) > 0.5  # the Doppler shift is more than half a bin
        near = np.abs(lofar.freqs_hz - ship.tonal_hz) < 20
        peak = lofar.freqs_hz[near][np.argmax(lofar.level_db[0, near])]
        assert peak == np.round(received), (ship.name, peak, received)


def test_bearing_rays_pass_through_the_ships(harbor):
    snr, log, run = harbor
    (hull,) = log.hydrophones
    rec = hull.read()
    btr = bearing_time_record(rec.samples, rec.sample_rate_hz, hull.mount.positions_ego(), AZIMUTHS, BAND,
                              start_ns=rec.start_ns)
    peaks = _two_peaks(btr.power[:, 0])
    track = log.world_from_ego()  # the #SKM pose source of the log
    centre = hull.mount.positions_ego().mean(axis=0)
    for ship in run.passive.ships:
        truth = run.passive.truth(ship, btr.times_ns)
        err = np.abs(np.angle(np.exp(1j * (peaks - truth["azimuth_rad"][:, None]))))
        az = peaks[np.arange(len(peaks)), np.argmin(err, axis=1)]
        origins, directions = bearing_rays(btr.times_ns, az, track, centre)
        np.testing.assert_allclose(directions[:, 2], 0.0, atol=1e-12)  # levelled
        miss = distance_to_rays(truth["position_m"], origins, directions)
        assert miss.max() < ship.length_m, (ship.name, miss)
        # the ego-horizontal ray tilts with the vessel's roll and pitch but keeps the azimuth
        _, tilted = bearing_rays(btr.times_ns, az, track, centre, level=False)
        np.testing.assert_allclose(np.arctan2(tilted[:, 1], tilted[:, 0]),
                                   np.arctan2(directions[:, 1], directions[:, 0]), atol=math.radians(0.5))


def test_a_bearing_projects_onto_the_ship_in_a_camera(harbor):
    _, log, run = harbor
    ship = run.passive.ships[0]
    t = np.array([log.hydrophones[0].start_ns + 2_500_000_000])
    truth = run.passive.truth(ship, t, frame_s=0.0, steps=1)
    track = log.world_from_ego()
    centre = log.hydrophones[0].mount.positions_ego().mean(axis=0)
    origins, directions = bearing_rays(t, truth["azimuth_rad"], track, centre)
    rng = float(np.linalg.norm(truth["position_m"][0, :2] - origins[0, :2]))
    pts = ray_points(origins, directions, np.array([rng]))[0]
    # a camera on the mast looking along the true bearing: x right, y down, z forward
    az = float(truth["azimuth_rad"][0])
    fwd = np.array([math.cos(az), math.sin(az), 0.0])
    right = np.array([math.sin(az), -math.cos(az), 0.0])
    ego_from_cam = SE3(quat.from_matrix(np.stack([right, [0, 0, -1.0], fwd], axis=1)), np.array([0.0, 0.0, 8.0]))
    cam = Camera("MAST", CameraIntrinsics(1920, 1080, 1000.0, 1000.0, 960.0, 540.0), ego_from_cam)
    world = np.vstack([pts, truth["position_m"]])
    proj = project_points(world, [cam], world_from_ego=track, camera_times_ns=t, frame="world")
    assert proj.in_image.all()
    du = abs(proj.uv[0, 0, 0] - proj.uv[0, 1, 0])
    assert du < 1000.0 * math.tan(math.radians(0.5)), du  # the levelled ray meets the ship's column


def test_bearing_track_interpolates_along_the_short_arc():
    t = np.array([0, 10, 20], np.int64)
    track = BearingTrack("c1", "merchant", t, np.radians([170.0, -170.0, -150.0]), np.array([100.0, 500.0]))
    az, valid = track.at(np.array([-1, 0, 5, 10, 15, 20, 21]))
    np.testing.assert_array_equal(valid, [False, True, True, True, True, True, False])
    np.testing.assert_allclose(np.degrees(az[1:6]), [170.0, 180.0, -170.0, -160.0, -150.0], atol=1e-9)
    assert np.isnan(az[[0, 6]]).all()
    one = BearingTrack("c2", "merchant", t[:1], np.array([0.5]), np.array([0.0, 1.0]))
    assert one.at(np.array([0, 1]))[1].tolist() == [True, False]
    with pytest.raises(ValueError, match="strictly increasing"):
        BearingTrack("c3", "x", np.array([0, 0]), np.zeros(2), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="band_hz"):
        BearingTrack("c4", "x", t, np.zeros(3), np.array([5.0, 1.0]))
    with pytest.raises(ValueError, match="azimuth_rad"):
        BearingTrack("c5", "x", t, np.array([0.0, np.nan, 0.0]), np.array([0.0, 1.0]))
