"""``prepare``'s passive-sonar layers: each hydrophone array's bearing-time record over its
whole recording (:mod:`formats.scene_store.passive`).

Per array of the raw log (:mod:`formats.hydrophone`): the recording, gains removed, is cut
into whole frames of the log's frame period (the median interval between its frames; 1 s for
a log of one frame), rounded to whole samples and at least ``nfft`` samples, and beamformed
(:func:`engine.passive.beamform.bearing_time_record`, Bartlett by default) with the array's
own element positions (ego frame, from its mount) over a full circle of azimuths every
``azimuth_step_deg`` (``-180°, -180° + step, ...``, at elevation 0) in one band, by default
500–2500 Hz (:class:`PassiveOptions`). The record keeps each frame's band power as float32;
a row's time is the frame's middle, ``start + round((k·L + L/2) · 1e9 / fs)`` ns.

The work is bounded by checked numbers: an array has at most :data:`MAX_ELEMENTS` elements
(the cross-spectral matrices grow with their square), a frame at most
``MAX_READ_SAMPLES // (FRAMES_PER_READ · C)`` samples (a longer period is shortened to it), and
the recording is read :data:`FRAMES_PER_READ` frames at a time, so no allocation follows a
length a file states; the record itself grows with the samples actually read. A read is a
whole number of the beamformer's own chunks of 64 frames, so the record equals one
``bearing_time_record`` call over the whole recording. The layers are recomputed on every
``prepare`` run (seconds for minutes of recording) and written with the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.passive.beamform import Method, bearing_time_record
from formats.hydrophone import HydrophoneArray
from formats.raw_log import RawLog
from formats.scene_store import PassiveRecord

MAX_ELEMENTS = 64
FRAMES_PER_READ = 64  # the beamformer works in chunks of 64 frames: a read is one of them
MAX_READ_SAMPLES = 1 << 26  # samples of one read, all channels together (256 MiB as float32)


@dataclass(frozen=True)
class PassiveOptions:
    """How the passive layers are computed (module docstring).

    Attributes:
        enabled: compute them (for a log with hydrophone arrays).
        band_hz: the band ``(lo, hi)``, Hz, inclusive; each array's sample rate must hold a
            frequency bin of it below Nyquist.
        frame_s: record frame length, s (None: the log's frame period, else 1 s).
        azimuth_step_deg: spacing of the azimuth grid (a full circle), degrees.
        nfft: FFT length of a snapshot (half-overlapping, Hann window).
        method: "bartlett" or "mvdr".
        sound_speed_m_s: for the steering delays.
    """

    enabled: bool = True
    band_hz: tuple[float, float] = (500.0, 2500.0)
    frame_s: float | None = None
    azimuth_step_deg: float = 1.0
    nfft: int = 256
    method: Method = "bartlett"
    sound_speed_m_s: float = 1500.0


def frame_period_s(log: RawLog) -> float:
    """The median interval between the log's frames, s; 1 s for fewer than two frames."""
    times = np.array([f.timestamp_ns for f in log.frames], np.int64)
    steps = np.diff(times)
    return float(np.median(steps)) / 1e9 if len(steps) and np.median(steps) > 0 else 1.0


def azimuth_grid(step_deg: float) -> np.ndarray:
    """``(B,) float64`` the full circle ``-π, -π + step, ...`` (radians) of ``step_deg``."""
    if not 0.01 <= step_deg <= 90.0:
        raise ValueError(f"azimuth_step_deg must be in [0.01, 90], got {step_deg}")
    return np.radians(np.arange(-180.0, 180.0, step_deg))


def frame_samples(array: HydrophoneArray, frame_s: float, nfft: int) -> int:
    """Samples per record frame of ``array``: ``frame_s`` at its rate, whole, >= ``nfft`` and
    within the read bound (module docstring); ValueError for an array over :data:`MAX_ELEMENTS`."""
    c = array.num_elements
    if not 2 <= c <= MAX_ELEMENTS:
        raise ValueError(f"hydrophone array {array.name!r} has {c} elements; a passive layer needs 2 to "
                         f"{MAX_ELEMENTS}")
    if not 2 <= nfft <= 1 << 16:
        raise ValueError(f"nfft must be in [2, 65536], got {nfft}")
    if not (frame_s > 0 and np.isfinite(frame_s)):
        raise ValueError(f"frame_s must be finite and > 0, got {frame_s}")
    cap = MAX_READ_SAMPLES // (FRAMES_PER_READ * c)
    return max(nfft, min(cap, round(frame_s * array.sample_rate_hz)))


def array_record(array: HydrophoneArray, frame_s: float, options: PassiveOptions) -> PassiveRecord:
    """The bearing-time record of ``array`` (module docstring); ValueError/FormatError naming
    what is wrong with the array or its recording."""
    length = frame_samples(array, frame_s, options.nfft)
    fs = array.sample_rate_hz
    azimuths = azimuth_grid(options.azimuth_step_deg)
    positions = array.mount.positions_ego()
    band = np.array([options.band_hz], np.float64)
    powers, first, start = [], 0, None
    while True:
        rec = array.read(first, FRAMES_PER_READ * length)
        start = rec if start is None else start
        n = rec.num_samples // length
        if n:
            btr = bearing_time_record(rec.samples[:, :n * length], fs, positions, azimuths, band, frame_s=length / fs,
                                      nfft=options.nfft, method=options.method,
                                      sound_speed_m_s=options.sound_speed_m_s)
            powers.append(btr.power[:, 0, :].astype(np.float32))
        if n < FRAMES_PER_READ:
            break
        first += n * length
    power = np.concatenate(powers) if powers else np.zeros((0, len(azimuths)), np.float32)
    times = start.sample_time_ns(np.arange(len(power)) * length + length / 2)
    return PassiveRecord(array.name, times, power, azimuths, band[0], positions.mean(axis=0), length / fs,
                         options.method, options.nfft, fs)


def passive_records(log: RawLog, options: PassiveOptions) -> tuple[list[PassiveRecord], list[str]]:
    """The record of each hydrophone array of ``log`` and a line for each array left out
    (its error), in the log's order; nothing when ``options.enabled`` is off."""
    if not options.enabled:
        return [], []
    frame_s = options.frame_s if options.frame_s is not None else frame_period_s(log)
    records, notes = [], []
    for array in log.hydrophones:
        try:
            records.append(array_record(array, frame_s, options))
        except ValueError as exc:  # FormatError included: one array's problem leaves the others
            notes.append(f"  passive layer {array.name!r} LEFT OUT: {exc}")
    return records, notes
