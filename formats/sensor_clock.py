"""A LiDAR's own packet clock placed on an absolute time line (shared by the pcap decoders).

Capture (pcap record) times carry the host's receive jitter, hundreds of µs per packet; the
sensor's stamps do not, but they may count from power-up or from the top of an hour that
only a GPS fix names. :func:`align_to_capture` keeps the sensor's stamps when they already
agree with the capture clock and otherwise maps them onto it with a robust straight-line fit
(offset and drift), so the result is jitter-free either way.
"""

from __future__ import annotations

import numpy as np

HOUR_NS = 3_600_000_000_000
SYNC_TOLERANCE_NS = 1_000_000_000  # sensor and capture clocks within this: the sensor's clock is absolute


def unwrap_hour(usec_since_hour: np.ndarray) -> np.ndarray:
    """``(P,) int64`` ns from µs-past-the-hour stamps in stream order, counting on across the
    top of each hour (a step back of over half an hour is a new hour)."""
    t = np.asarray(usec_since_hour, np.int64) * 1000
    if len(t) < 2:
        return t
    back = np.diff(t) < -HOUR_NS // 2
    return t + np.concatenate([[0], np.cumsum(back)]) * HOUR_NS


def place_in_hour(usec_since_hour: np.ndarray, reference_ns: np.ndarray) -> np.ndarray:
    """``(P,) int64`` UNIX ns: each µs-past-the-hour stamp in the hour that puts it nearest its
    ``reference_ns`` (a capture time or a GPS time of the same moment, within half an hour)."""
    ref = np.asarray(reference_ns, np.int64)
    t = (ref // HOUR_NS) * HOUR_NS + np.asarray(usec_since_hour, np.int64) * 1000
    t = np.where(t > ref + HOUR_NS // 2, t - HOUR_NS, t)
    return np.where(t < ref - HOUR_NS // 2, t + HOUR_NS, t)


def fit_to_capture(sensor_ns: np.ndarray, capture_ns: np.ndarray) -> np.ndarray:
    """``(P,) int64`` the sensor stamps mapped onto the capture clock: ``capture - sensor`` fitted
    as a straight line in sensor time (least squares, refitted without residuals beyond five
    robust standard deviations), so the capture jitter averages out and clock drift is kept."""
    s = np.asarray(sensor_ns, np.int64)
    c = np.asarray(capture_ns, np.int64)
    if len(s) == 0:
        return s.copy()
    s0 = s[0]
    x = (s - s0).astype(np.float64)
    y = (c - s).astype(np.float64)
    y0 = np.median(y)
    y -= y0
    keep = np.ones(len(s), bool)
    for _ in range(2):
        if np.ptp(x[keep]) > 0 and np.count_nonzero(keep) > 2:
            slope, icpt = np.polyfit(x[keep], y[keep], 1)
        else:
            slope, icpt = 0.0, float(np.mean(y[keep]))
        r = y - (icpt + slope * x)
        mad = np.median(np.abs(r - np.median(r)))
        keep = np.abs(r - np.median(r)) <= 5 * 1.4826 * mad + 1000.0
    return s + np.int64(y0) + np.rint(icpt + slope * x).astype(np.int64)


def align_to_capture(sensor_ns: np.ndarray, capture_ns: np.ndarray) -> tuple[np.ndarray, bool]:
    """The sensor stamps as they are when their median difference to the capture times is
    under :data:`SYNC_TOLERANCE_NS` (both clocks absolute), else :func:`fit_to_capture`.
    Returns ``((P,) int64 ns, kept_as_is)``."""
    s = np.asarray(sensor_ns, np.int64)
    c = np.asarray(capture_ns, np.int64)
    if len(s) and abs(np.median(c - s)) < SYNC_TOLERANCE_NS:
        return s.copy(), True
    return fit_to_capture(s, c), False
