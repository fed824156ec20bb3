"""Marine rig: a survey vessel with a multibeam echosounder and a forward-looking sonar.

The scene is a smooth seabed height field with a wreck (a box) and a pipe (a cylinder)
on it, in the world ENU frame around a geodetic origin. The vessel sails a straight line
with sinusoidal roll, pitch, yaw and heave. Every ping the multibeam casts a fan of rays
fixed in the vessel frame (rotated by the attitude) and reports its soundings as a
Kongsberg system does: x forward / y starboard / z down, levelled and heading-aligned,
metres from the reference point, plus the ping's latitude/longitude, heading and
waterline offset. The forward-looking sonar renders a polar intensity image. Ground
truth (world hit points, which object each ray hit, the vessel poses) comes alongside.

A hull-mounted ring of hydrophones records the ships passing (:func:`simulate_passive`,
propagation in :mod:`engine.sim.acoustic`), with the truth a passive-sonar analyst needs:
each ship's bearing as the array hears it, its position and its Doppler-shifted tonal.

Everything is deterministic for a seed; NumPy only (the rig is not a hot path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine import quaternion as quat
from engine.geodesy import Origin, enu_rotation, enu_to_ecef, enu_to_geodetic
from engine.georeference import world_from_ego_rotation
from engine.pose_track import PoseTrack
from engine.sim.acoustic import Ship, element_tracks, received, retarded_time

HIT_NONE, HIT_SEABED, HIT_WRECK, HIT_PIPE = -1, 0, 1, 2
REJECTED = 2  # Kongsberg detection type of a rejected sounding
MBES_LEVER_ARM_M = np.array([0.5, 0.2, 2.0])  # multibeam re the reference point, vessel frame (fwd, stbd, down)


@dataclass(frozen=True)
class Seabed:
    """Height field ``z = −depth + amp·sin(2πx/λx)·cos(2πy/λy) + slope·x`` (world metres)."""

    depth_m: float = 30.0
    amplitude_m: float = 1.5
    wavelength_x_m: float = 80.0
    wavelength_y_m: float = 60.0
    slope: float = 0.02

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (-self.depth_m + self.amplitude_m * np.sin(2 * np.pi * x / self.wavelength_x_m)
                * np.cos(2 * np.pi * y / self.wavelength_y_m) + self.slope * x)


@dataclass(frozen=True)
class Wreck:
    """A box: ``centre (3,)`` world, ``size (3,)`` (length, width, height), ``yaw_rad``."""

    centre: np.ndarray
    size: np.ndarray
    yaw_rad: float


@dataclass(frozen=True)
class Pipe:
    """A cylinder from ``start (3,)`` to ``end (3,)`` (world) with ``radius_m``."""

    start: np.ndarray
    end: np.ndarray
    radius_m: float


@dataclass
class VesselRun:
    """A simulated survey line.

    ``mrz``: keyword arrays for ``formats.kmall.MrzPings`` (per ping and per sounding).
    ``skm``: keyword arrays for ``formats.kmall.SkmSamples`` (attitude/position at ``skm_rate_hz``).
    ``truth_hit (N, 3) float64``: world hit point of each sounding (NaN where nothing was hit
    or the sounding is reported rejected); ``truth_object (N,) int8``: ``HIT_*`` code.
    ``truth_rotation (P, 4)`` / ``truth_translation (P, 3)``: ``world_from_ego`` of the
    reference point at the ping times.
    ``fls_image (R, B) uint8``, ``fls_bearings_deg (B,)``, ``fls_range_resolution_m``,
    ``fls_ego_from_sonar`` (quaternion, translation), ``fls_truth_range_m (B,)``: nearest
    hit along each beam's centre ray (NaN for none), for the first ping.
    ``passive``: the hull array's recording when one was simulated (:func:`simulate_passive`).
    """

    origin: Origin
    seabed: Seabed
    wreck: Wreck
    pipe: Pipe
    mrz: dict
    skm: dict
    truth_hit: np.ndarray
    truth_object: np.ndarray
    truth_rotation: np.ndarray
    truth_translation: np.ndarray
    fls_image: np.ndarray
    fls_bearings_deg: np.ndarray
    fls_range_resolution_m: float
    fls_ego_from_sonar: tuple[np.ndarray, np.ndarray]
    fls_truth_range_m: np.ndarray
    passive: "PassiveRun | None" = None


# ---------------------------------------------------------------- ray casting


def _cast_seabed(o: np.ndarray, d: np.ndarray, seabed: Seabed, t_max: float, step: float = 0.25) -> np.ndarray:
    """First ``t`` with ``o + t d`` below the height field (march, then bisection); inf if none."""
    ts = np.arange(0.0, t_max + step, step)
    p = o[:, None, :] + ts[None, :, None] * d[:, None, :]
    g = p[..., 2] - seabed.height(p[..., 0], p[..., 1])
    below = g <= 0
    first = np.where(below.any(axis=1), below.argmax(axis=1), -1)
    t = np.full(len(o), np.inf)
    ok = first > 0
    lo = ts[np.maximum(first - 1, 0)][ok]
    hi = ts[np.maximum(first, 0)][ok]
    oo, dd = o[ok], d[ok]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        q = oo + mid[:, None] * dd
        under = q[:, 2] - seabed.height(q[:, 0], q[:, 1]) <= 0
        hi = np.where(under, mid, hi)
        lo = np.where(under, lo, mid)
    t[ok] = 0.5 * (lo + hi)
    return t


def _cast_box(o: np.ndarray, d: np.ndarray, box: Wreck) -> np.ndarray:
    c, s = math.cos(box.yaw_rad), math.sin(box.yaw_rad)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # box_from_world
    lo_ = (o - box.centre) @ rot.T
    ld = d @ rot.T
    half = np.asarray(box.size) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - lo_) / ld
        t2 = (half - lo_) / ld
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tmax >= tmin) & (tmax > 0)
    return np.where(hit, np.where(tmin > 0, tmin, tmax), np.inf)


def _cast_cylinder(o: np.ndarray, d: np.ndarray, pipe: Pipe) -> np.ndarray:
    axis = pipe.end - pipe.start
    length = np.linalg.norm(axis)
    a_hat = axis / length
    w = o - pipe.start
    dp = d - (d @ a_hat)[:, None] * a_hat
    wp = w - (w @ a_hat)[:, None] * a_hat
    a = np.sum(dp * dp, axis=1)
    b = 2 * np.sum(dp * wp, axis=1)
    c = np.sum(wp * wp, axis=1) - pipe.radius_m ** 2
    disc = b * b - 4 * a * c
    t = np.full(len(o), np.inf)
    ok = (disc >= 0) & (a > 0)
    t0 = (-b[ok] - np.sqrt(disc[ok])) / (2 * a[ok])
    along = np.sum((w[ok] + t0[:, None] * d[ok]) * a_hat, axis=1)
    good = (t0 > 0) & (along >= 0) & (along <= length)
    tt = np.full(ok.sum(), np.inf)
    tt[good] = t0[good]
    t[ok] = tt
    return t


def cast_rays(o: np.ndarray, d: np.ndarray, seabed: Seabed, wreck: Wreck, pipe: Pipe, t_max: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit ``t (M,)`` (inf for none within ``t_max``) and ``HIT_*`` code of unit rays."""
    ts = np.stack([_cast_seabed(o, d, seabed, t_max), _cast_box(o, d, wreck), _cast_cylinder(o, d, pipe)], axis=1)
    which = np.argmin(ts, axis=1)
    t = ts[np.arange(len(o)), which]
    code = np.where(np.isfinite(t) & (t <= t_max), which, HIT_NONE).astype(np.int8)
    return np.where(code >= 0, t, np.inf), code


# ---------------------------------------------------------------- the rig


_FRD_FROM_FLU = np.diag([1.0, -1.0, -1.0])
T0_NS = 1_700_000_000_000_000_000  # the survey's start
_SPEED_M_S, _HEADING0_RAD, _REF_ABOVE_WATER_M = 2.0, math.radians(10.0), 1.0


def _vessel_state(t_s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Roll, pitch, heading (rad), heave (m, down) and ENU position ``(N, 3)`` of the reference
    point ``t_s`` seconds after :data:`T0_NS` (the waterline is the origin's level)."""
    roll = np.radians(4.0) * np.sin(2 * np.pi * t_s / 7.0 + 0.3)
    pitch = np.radians(2.0) * np.sin(2 * np.pi * t_s / 5.0 + 1.1)
    heading = _HEADING0_RAD + np.radians(3.0) * np.sin(2 * np.pi * t_s / 11.0)
    heave = 0.4 * np.sin(2 * np.pi * t_s / 6.0 + 0.7)  # positive down
    e = -5.0 + _SPEED_M_S * math.sin(_HEADING0_RAD) * t_s
    n = _SPEED_M_S * math.cos(_HEADING0_RAD) * t_s
    return roll, pitch, heading, heave, np.stack([e, n, _REF_ABOVE_WATER_M - heave], axis=1)


def simulate_survey(seed: int = 0, num_pings: int = 20, beams: int = 128, ping_rate_hz: float = 2.0,
                    skm_rate_hz: float = 50.0, origin: Origin = Origin(51.2, 2.9, 0.0),
                    rejected_fraction: float = 0.05) -> VesselRun:
    """Sail one line over the wreck and the pipe; return the sonar data and ground truth.

    The reference point rides ``1 m`` above the waterline less heave; the multibeam sits
    at lever arm :data:`MBES_LEVER_ARM_M` ``(0.5, 0.2, 2.0)`` m (vessel frame), its fan spans ±60° across track.
    Beams that hit nothing and a random ``rejected_fraction`` are reported as rejected
    detections with bogus coordinates (what a reader must never draw as seabed).
    """
    rng = np.random.default_rng(seed)
    seabed = Seabed()
    wreck_c = np.array([0.0, 20.0, 0.0])
    wreck_c[2] = seabed.height(wreck_c[:1], wreck_c[1:2])[0] + 1.5
    wreck = Wreck(wreck_c, np.array([25.0, 7.0, 4.0]), 0.4)
    p0 = np.array([-30.0, 8.0, 0.0])
    p1 = np.array([30.0, 4.0, 0.0])
    for end in (p0, p1):
        end[2] = seabed.height(end[:1], end[1:2])[0] + 0.2
    pipe = Pipe(p0, p1, 0.5)

    # attitude/position samples
    t_skm = np.arange(0.0, num_pings / ping_rate_hz + 1.0, 1.0 / skm_rate_hz)
    roll, pitch, heading, heave, pos = _vessel_state(t_skm)
    lat, lon, h = enu_to_geodetic(pos, origin)
    skm = {
        "time_ns": T0_NS + np.round(t_skm * 1e9).astype(np.int64), "status": np.zeros(len(t_skm), np.uint32),
        "latitude_deg": lat, "longitude_deg": lon, "ellipsoid_height_m": h,
        "roll_deg": np.degrees(roll), "pitch_deg": np.degrees(pitch), "heading_deg": np.degrees(heading),
        "heave_m": heave, "delayed_heave_time_ns": T0_NS + np.round(t_skm * 1e9).astype(np.int64),
        "delayed_heave_m": heave,
    }

    # pings
    t_ping = 0.5 + np.arange(num_pings) / ping_rate_hz
    roll, pitch, heading, heave, pos = _vessel_state(t_ping)
    lat, lon, h = enu_to_geodetic(pos, origin)
    lever = MBES_LEVER_ARM_M
    across = np.radians(np.linspace(-60.0, 60.0, beams))
    fan_frd = np.stack([np.zeros(beams), np.sin(across), np.cos(across)], axis=1)  # vessel frame, +angle → starboard
    columns = ("x_m", "y_m", "z_m", "beam_angle_deg", "two_way_travel_time_s", "detection_type")
    rows: dict[str, list[np.ndarray]] = {k: [] for k in columns}
    hits, objects, q_truth = [], [], []
    for p in range(num_pings):
        world_from_ego = world_from_ego_rotation(lat[p], lon[p], np.degrees(roll[p]), np.degrees(pitch[p]),
                                                 np.degrees(heading[p]), origin)[0]
        world_from_frd = world_from_ego @ _FRD_FROM_FLU
        q_truth.append(quat.from_matrix(world_from_ego))
        o = pos[p] + world_from_frd @ lever
        d = fan_frd @ world_from_frd.T
        t, code = cast_rays(np.repeat(o[None], beams, 0), d, seabed, wreck, pipe, t_max=120.0)
        hit = o + t[:, None] * d
        hit[code < 0] = np.nan
        # sounding re the reference point, in the local level frame at the ping position
        ref_ecef = enu_to_ecef(pos[p], origin)
        rel_local = (enu_to_ecef(np.where(np.isnan(hit), 0.0, hit), origin) - ref_ecef) @ enu_rotation(lat[p], lon[p]).T
        sh, ch = math.sin(heading[p]), math.cos(heading[p])
        x = rel_local[:, 0] * sh + rel_local[:, 1] * ch
        y = rel_local[:, 0] * ch - rel_local[:, 1] * sh
        z = -rel_local[:, 2]
        det = np.where(code < 0, REJECTED, 0)
        det[rng.random(beams) < rejected_fraction] = REJECTED
        bogus = det == REJECTED
        x, y, z = (np.where(bogus, v, a) for a, v in ((x, 0.0), (y, 0.0), (z, 500.0)))
        rows["x_m"].append(x)
        rows["y_m"].append(y)
        rows["z_m"].append(z)
        rows["beam_angle_deg"].append(-np.degrees(across))  # Kongsberg: positive port
        rows["two_way_travel_time_s"].append(np.where(np.isfinite(t), 2 * t / 1500.0, 0.0))
        rows["detection_type"].append(det)
        hits.append(np.where(bogus[:, None], np.nan, hit))
        objects.append(np.where(bogus, HIT_NONE, code))
    mrz = {k: np.concatenate(v) for k, v in rows.items()}
    n = len(mrz["x_m"])
    # the waterline is the level surface at the origin's height; its z re the reference point
    # (SCS, down positive) is the reference point's height above it
    mrz.update(
        time_ns=T0_NS + np.round(t_ping * 1e9).astype(np.int64), ping_counter=np.arange(num_pings),
        rx_fan_index=np.zeros(num_pings), heading_deg=np.degrees(heading) % 360.0,
        sound_speed_m_s=np.full(num_pings, 1500.0), tx_transducer_depth_m=np.full(num_pings, 1.0),
        z_water_level_m=h - origin.alt_m, latitude_deg=lat, longitude_deg=lon, ellipsoid_height_m=h,
        sounding_start=np.arange(num_pings + 1) * beams, reflectivity_db=np.full(n, -30.0),
        quality_factor=np.full(n, 0.3), delta_latitude_deg=np.zeros(n), delta_longitude_deg=np.zeros(n),
        detection_method=np.ones(n), sounding_index=np.tile(np.arange(beams), num_pings), tx_sector=np.zeros(n),
    )
    fls = _render_fls(pos[0], world_from_ego_rotation(lat[0], lon[0], np.degrees(roll[0]), np.degrees(pitch[0]),
                                                      np.degrees(heading[0]), origin)[0], seabed, wreck, pipe, rng)
    return VesselRun(
        origin=origin, seabed=seabed, wreck=wreck, pipe=pipe, mrz=mrz, skm=skm,
        truth_hit=np.concatenate(hits), truth_object=np.concatenate(objects).astype(np.int8),
        truth_rotation=np.stack(q_truth), truth_translation=pos, **fls,
    )


def _render_fls(ref_world: np.ndarray, world_from_ego: np.ndarray, seabed: Seabed, wreck: Wreck, pipe: Pipe,
                rng: np.random.Generator, beams: int = 64, bins: int = 400, max_range_m: float = 80.0,
                tilt_deg: float = 35.0, elevation_fan_deg: float = 20.0, rays_per_beam: int = 41) -> dict:
    """Polar image of a bow-mounted FLS tilted down: every beam sums rays across its
    vertical beamwidth into range bins, weighted by the cosine of the incidence."""
    tilt = math.radians(tilt_deg)
    ego_from_sonar_m = np.array([[math.cos(tilt), 0, math.sin(tilt)], [0, 1, 0], [-math.sin(tilt), 0, math.cos(tilt)]])
    lever = np.array([4.0, 0.0, -1.5])  # ego frame: bow, 1.5 m down
    bearings = np.linspace(-45.0, 45.0, beams)
    res = max_range_m / bins
    image = np.zeros((bins, beams))
    truth = np.full(beams, np.nan)
    o = ref_world + world_from_ego @ lever
    elev = np.radians(np.linspace(-elevation_fan_deg / 2, elevation_fan_deg / 2, rays_per_beam))
    for j, b in enumerate(np.radians(bearings)):
        d_sonar = np.stack([np.cos(elev) * np.cos(b), -np.cos(elev) * np.sin(b), np.sin(elev)], axis=1)
        d = d_sonar @ (world_from_ego @ ego_from_sonar_m).T
        t, code = cast_rays(np.repeat(o[None], len(d), 0), d, seabed, wreck, pipe, t_max=max_range_m - res)
        ok = code >= 0
        k = (t[ok] / res).astype(int)
        np.add.at(image[:, j], k, 1.0)
        centre = len(elev) // 2
        truth[j] = t[centre] if code[centre] >= 0 else np.nan
    image = 255.0 * image / max(image.max(), 1.0) + rng.uniform(0, 8, image.shape)
    q = quat.from_matrix(ego_from_sonar_m)
    return {
        "fls_image": np.clip(image, 0, 255).astype(np.uint8), "fls_bearings_deg": bearings,
        "fls_range_resolution_m": res, "fls_ego_from_sonar": (q, lever), "fls_truth_range_m": truth,
    }


# ---------------------------------------------------------------- passive sonar

HYDROPHONE_CENTRE_M = np.array([2.0, 0.0, 3.0])  # hull array centre, vessel frame (fwd, stbd, down)
HYDROPHONE_RADIUS_M = 1.5
HYDROPHONE_COUNT = 32
PASSIVE_BAND_HZ = (100.0, 3000.0)  # of the ships' broadband noise and the ambient noise
AMBIENT_RMS = 0.02  # full scale, per element


def hydrophone_elements(count: int = HYDROPHONE_COUNT, radius_m: float = HYDROPHONE_RADIUS_M) -> np.ndarray:
    """``(count, 3)`` elements of the hull-mounted horizontal ring array, vessel frame
    (x fwd, y stbd, z down), element 0 ahead, then clockwise seen from above."""
    a = 2 * np.pi * np.arange(count) / count
    return HYDROPHONE_CENTRE_M + radius_m * np.stack([np.cos(a), np.sin(a), np.zeros(count)], axis=1)


def harbor_ships(snr_db: float = 10.0) -> tuple[Ship, ...]:
    """Two ships ~800 m off, one on the starboard bow, one on the port quarter, tonals at
    437.3 Hz and 611.7 Hz, sources 4 m deep, both at array SNR ``snr_db``."""
    return (Ship("ferry", np.array([600.0, 500.0, -4.0]), np.array([-4.0, 3.0, 0.0]), 60.0, 437.3, snr_db),
            Ship("tanker", np.array([-700.0, 300.0, -4.0]), np.array([5.0, 0.0, 0.0]), 120.0, 611.7, snr_db))


def vessel_pose_track(start_s: float, end_s: float, rate_hz: float = 100.0, origin: Origin = Origin(51.2, 2.9, 0.0)
                      ) -> PoseTrack:
    """``world_from_ego`` of the survey vessel (ENU around ``origin``) sampled at ``rate_hz``
    over ``[start_s, end_s]`` seconds after :data:`T0_NS`."""
    t = np.arange(start_s, end_s + 0.5 / rate_hz, 1.0 / rate_hz)
    roll, pitch, heading, _, pos = _vessel_state(t)
    lat, lon, _ = enu_to_geodetic(pos, origin)
    r = world_from_ego_rotation(lat, lon, np.degrees(roll), np.degrees(pitch), np.degrees(heading), origin)
    return PoseTrack(T0_NS + np.round(t * 1e9).astype(np.int64), quat.from_matrix(r), pos)


@dataclass
class PassiveRun:
    """The hull array's recording and its truth: ``samples (C, N) float32`` pressure (full scale,
    before any gain) from :data:`T0_NS` at ``sample_rate_hz``; ``elements_vessel (C, 3)``; the
    ``ships``; ``world_from_ego`` the vessel's true pose track."""

    samples: np.ndarray
    sample_rate_hz: float
    start_ns: int
    elements_vessel: np.ndarray
    ships: tuple[Ship, ...]
    world_from_ego: PoseTrack

    @property
    def centre_ego(self) -> np.ndarray:
        return self.elements_vessel.mean(axis=0) * np.array([1.0, -1.0, -1.0])

    def truth(self, ship: Ship, times_ns: np.ndarray, frame_s: float = 1.0, steps: int = 21) -> dict[str, np.ndarray]:
        """Per time (a frame's middle): the ship's ego-frame ``azimuth_rad`` as the array centre
        hears it (circular mean over the frame of the direction to the ship's retarded
        position), that ``position_m (M, 3)`` at the middle, and the received tonal
        ``tonal_hz`` (Doppler-shifted: ``f0 dτ/dt``)."""
        offsets = np.r_[np.linspace(-frame_s / 2, frame_s / 2, steps), -1e-3, 1e-3]  # + 2 for the Doppler rate
        t_ns = np.asarray(times_ns, np.int64)[:, None] + np.round(offsets * 1e9).astype(np.int64)
        t_s = (t_ns - T0_NS) / 1e9
        pose = self.world_from_ego.interpolate(t_ns.ravel())
        r = quat.to_matrix(pose.rotation)
        centre = np.einsum("nij,j->ni", r, self.centre_ego) + pose.translation
        tau, _ = retarded_time(ship, centre, t_s.ravel())
        ego = np.einsum("nji,nj->ni", r, ship.position(tau) - centre)
        heard = np.exp(1j * np.arctan2(ego[:, 1], ego[:, 0])).reshape(t_s.shape)[:, :steps]
        az = np.angle(heard.mean(axis=1))
        tau = tau.reshape(t_s.shape)
        rate = (tau[:, -1] - tau[:, -2]) / (t_s[:, -1] - t_s[:, -2])
        return {"azimuth_rad": az, "position_m": ship.position(tau[:, steps // 2]), "tonal_hz": ship.tonal_hz * rate}


def simulate_passive(seed: int = 0, duration_s: float = 10.0, sample_rate_hz: float = 8000.0, snr_db: float = 10.0,
                     ships: tuple[Ship, ...] | None = None, origin: Origin = Origin(51.2, 2.9, 0.0)) -> PassiveRun:
    """The hull ring array (:func:`hydrophone_elements`) recording :func:`harbor_ships` (or
    ``ships``) for ``duration_s`` from :data:`T0_NS` while the vessel sails its survey line
    (see :mod:`engine.sim.acoustic` for the propagation and the SNR rule)."""
    rng = np.random.default_rng(seed)
    ships = harbor_ships(snr_db) if ships is None else ships
    n = int(round(duration_s * sample_rate_hz))
    track = vessel_pose_track(-1.0, duration_s + 1.0, origin=origin)
    times_s = np.arange(n) / sample_rate_hz
    elements = hydrophone_elements()
    times_ns = T0_NS + np.round(times_s * 1e9).astype(np.int64)
    world = element_tracks(track, elements * np.array([1.0, -1.0, -1.0]), times_ns)
    x = received(list(ships), world, times_s, sample_rate_hz, PASSIVE_BAND_HZ, AMBIENT_RMS, rng)
    return PassiveRun(x.astype(np.float32), sample_rate_hz, T0_NS, elements, tuple(ships), track)
