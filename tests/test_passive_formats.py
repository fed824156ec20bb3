"""Hydrophone recordings (WAV, FLAC, raw PCM) and the raw log's hydrophone entry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from formats.errors import FormatError
from formats.hydrophone import (
    PCM_HEADER,
    ArrayMount,
    HydrophoneArray,
    array_from_json,
    array_to_json,
    read_hydrophone,
    write_hydrophone,
)

FS = 8000.0
T0 = 1_700_000_000_123_456_789


@pytest.fixture
def samples():
    return (0.5 * np.random.default_rng(3).uniform(-1, 1, (4, 1000))).astype(np.float32)


@pytest.mark.parametrize("suffix,subtype,tol", [(".wav", "FLOAT", 0.0), (".wav", "PCM_16", 2 ** -15),
                                                (".flac", "PCM_24", 2 ** -23)])
def test_soundfile_recordings_read_as_libsndfile_reads_them(tmp_path, samples, suffix, subtype, tol):
    path = write_hydrophone(tmp_path / f"a{suffix}", samples, FS, subtype=subtype)
    rec = read_hydrophone(path, start_ns=T0, sample_rate_hz=FS, channels=4)
    peer, fs = soundfile.read(path, dtype="float32", always_2d=True)
    assert fs == FS and rec.samples.dtype == np.float32 and rec.samples.flags.c_contiguous
    np.testing.assert_array_equal(rec.samples, peer.T)
    assert np.abs(rec.samples - samples).max() <= tol
    assert rec.start_ns == T0


@pytest.mark.parametrize("fmt,scale", [(1, 2.0 ** 15), (2, 2.0 ** 31), (3, None)])
def test_raw_pcm_roundtrip_and_layout(tmp_path, samples, fmt, scale):
    path = write_hydrophone(tmp_path / "a.pcm", samples, FS, T0, pcm_format=fmt)
    raw = path.read_bytes()
    magic, header, channels, code, fs, t0, frames = PCM_HEADER.unpack(raw[:PCM_HEADER.size])
    assert (magic, header, channels, code, fs, t0, frames) == (b"FTHMPCM1", 40, 4, fmt, FS, T0, 1000)
    # frame-major interleaving, checked on the bytes
    dtype = {1: "<i2", 2: "<i4", 3: "<f4"}[fmt]
    body = np.frombuffer(raw[40:], dtype).reshape(1000, 4)
    want = samples.T if scale is None else np.rint(samples.T.astype(np.float64) * scale)
    np.testing.assert_array_equal(body, want.astype(dtype))
    rec = read_hydrophone(path)
    assert rec.start_ns == T0 and rec.sample_rate_hz == FS
    expect = body.T.astype(np.float64) / (scale or 1.0)
    np.testing.assert_array_equal(rec.samples, expect.astype(np.float32))


def test_windows_gains_and_sample_times(tmp_path, samples):
    path = write_hydrophone(tmp_path / "a.pcm", samples, FS, T0)
    gains = np.array([0.0, 6.0, 20.0, -6.0])
    rec = read_hydrophone(path, gains_db=gains, first=250, count=100)
    np.testing.assert_allclose(rec.samples, samples[:, 250:350] / 10 ** (gains[:, None] / 20), rtol=1e-6)
    # sample-accurate: sample 250 at 250 / 8000 s = 31.25 ms after the start
    assert rec.start_ns == T0 + 31_250_000
    np.testing.assert_array_equal(rec.sample_time_ns(np.array([0, 1, 99])), T0 + np.array([31_250_000, 31_375_000,
                                                                                            43_625_000]))
    assert read_hydrophone(path, first=990, count=100).num_samples == 10  # cut at the end
    assert read_hydrophone(path, first=5000).num_samples == 0


def test_a_non_integer_rate_rounds_each_sample_time(tmp_path, samples):
    path = write_hydrophone(tmp_path / "a.pcm", samples, 3.0, 7)
    rec = read_hydrophone(path)
    np.testing.assert_array_equal(rec.sample_time_ns(np.arange(4)), [7, 333_333_340, 666_666_674, 1_000_000_007])


def _pcm(tmp_path, **change):
    fields = dict(magic=b"FTHMPCM1", header=40, channels=2, code=3, fs=FS, t0=0, frames=10)
    fields.update(change)
    path = tmp_path / "bad.pcm"
    body = np.zeros((10, 2), "<f4").tobytes()
    path.write_bytes(PCM_HEADER.pack(*fields.values()) + body)
    return path


@pytest.mark.parametrize("change,offset,words", [
    (dict(magic=b"RIFFxxxx"), 0, "magic"), (dict(header=8), 8, "header_bytes"), (dict(channels=0), 12, "channel"),
    (dict(code=9), 14, "sample format"), (dict(fs=float("nan")), 16, "sample rate"), (dict(fs=-1.0), 16, "sample rate"),
    (dict(frames=11), 120, "bytes"), (dict(frames=2 ** 62), 120, "bytes"),
])
def test_damaged_pcm_headers_are_named(tmp_path, change, offset, words):
    with pytest.raises(FormatError) as err:
        read_hydrophone(_pcm(tmp_path, **change))
    assert err.value.offset == offset and words in err.value.expected


def test_bad_recordings_and_disagreements_are_reported(tmp_path, samples):
    (tmp_path / "short.pcm").write_bytes(b"FTHMPCM1")
    with pytest.raises(FormatError, match="40-byte raw PCM header"):
        read_hydrophone(tmp_path / "short.pcm")
    (tmp_path / "junk.wav").write_bytes(b"not a wave file at all")
    with pytest.raises(FormatError, match="libsndfile"):
        read_hydrophone(tmp_path / "junk.wav", start_ns=0)
    wav = write_hydrophone(tmp_path / "a.wav", samples, FS, subtype="FLOAT")
    with pytest.raises(ValueError, match="start_ns"):
        read_hydrophone(wav)
    with pytest.raises(FormatError, match="4000"):
        read_hydrophone(wav, start_ns=0, sample_rate_hz=4000)
    with pytest.raises(FormatError, match="3 channels"):
        read_hydrophone(wav, start_ns=0, channels=3)
    pcm = write_hydrophone(tmp_path / "a.pcm", samples, FS, 5)
    with pytest.raises(FormatError, match="start_ns 6"):
        read_hydrophone(pcm, start_ns=6)
    bad = samples.copy()
    bad[1, 7] = np.nan
    with pytest.raises(FormatError, match="finite"):
        read_hydrophone(write_hydrophone(tmp_path / "nan.pcm", bad, FS))
    with pytest.raises(FormatError, match=r"\.pcm"):
        read_hydrophone(tmp_path / "a.mp3", start_ns=0)


# ---------------------------------------------------------------- the raw log's entry


def _entry(**change):
    d = {"name": "HULL", "path": "acoustic/HULL.flac", "start_ns": T0, "sample_rate_hz": FS, "gains_db": 12,
         "mount": {"kind": "hull", "elements_m": [[1.0, 2.0, 3.0], [1.0, -2.0, 3.0]]}}
    d.update(change)
    return d


def test_hull_entry_converts_vessel_to_ego_frame(tmp_path):
    a = array_from_json(_entry(), tmp_path, tmp_path / "log.json", "hydrophones[0]")
    assert a.path == (tmp_path / "acoustic/HULL.flac").resolve() and a.start_ns == T0
    np.testing.assert_array_equal(a.gains_db, [12.0, 12.0])
    np.testing.assert_array_equal(a.mount.positions_ego(), [[1.0, -2.0, -3.0], [1.0, 2.0, -3.0]])
    back = array_to_json(a, tmp_path)
    assert back == {**_entry(), "gains_db": [12.0, 12.0]}


def test_towed_line_sits_astern_of_its_tow_point(tmp_path):
    mount = {"kind": "towed", "tow_point_m": [-20.0, 1.0, 0.5], "cable_m": 150.0, "depth_m": 12.0,
             "elements_m": [0.0, 0.75, 1.5]}
    a = array_from_json(_entry(mount=mount, gains_db=[0, 1, 2]), tmp_path, tmp_path / "log.json", "h")
    np.testing.assert_array_equal(a.mount.positions_vessel(), [[-170.0, 1.0, 12.0], [-170.75, 1.0, 12.0],
                                                               [-171.5, 1.0, 12.0]])
    np.testing.assert_array_equal(a.mount.positions_ego()[:, 1:], [[-1.0, -12.0]] * 3)
    assert array_to_json(a, tmp_path)["mount"] == mount


@pytest.mark.parametrize("change,words", [
    (dict(name="../x"), "name"), (dict(path="../outside.wav"), "inside the log"), (dict(start_ns=1.5), "start_ns"),
    (dict(sample_rate_hz=0), "sample_rate_hz"), (dict(gains_db=[1, 2, 3]), "gains_db"),
    (dict(gains_db="loud"), "gains_db"), (dict(mount={"kind": "bow"}), "kind"),
    (dict(mount={"kind": "hull", "elements_m": [[1, 2]]}), "elements_m"),
    (dict(mount={"kind": "hull", "elements_m": []}), "elements_m"),
    (dict(mount={"kind": "towed", "elements_m": [0, 1], "tow_point_m": [0, 0], "cable_m": 1, "depth_m": 1}),
     "tow_point_m"),
    (dict(mount={"kind": "towed", "elements_m": [0, 1], "tow_point_m": [0, 0, 0], "depth_m": 1}), "cable_m"),
])
def test_bad_entries_name_the_field(tmp_path, change, words):
    with pytest.raises(FormatError) as err:
        array_from_json(_entry(**change), tmp_path, tmp_path / "log.json", "hydrophones[0]")
    assert "hydrophones[0]" in str(err.value) and words in str(err.value)


def test_raw_log_lists_hydrophones_and_reads_their_recording(tmp_path, samples):
    from formats.raw_log import read_log, write_log_manifest
    from formats.rig import SceneOrigin

    write_hydrophone(tmp_path / "acoustic/HULL.flac", samples * 10 ** (6 / 20), FS, subtype="PCM_24")
    (tmp_path / "poses.csv").write_text("timestamp_ns,tx,ty,tz,qw,qx,qy,qz\n0,0,0,0,1,0,0,0\n")
    mount = ArrayMount("hull", np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]))
    arr = HydrophoneArray("HULL", tmp_path / "acoustic/HULL.flac", T0, FS, np.full(4, 6.0), mount)
    write_log_manifest(tmp_path, log_id="x", origin=SceneOrigin(), lidars=[], cameras=[], frames=[],
                       hydrophones=[arr])
    doc = json.loads((tmp_path / "log.json").read_text())
    assert doc["hydrophones"][0]["path"] == "acoustic/HULL.flac"
    log = read_log(tmp_path)
    (h,) = log.hydrophones
    rec = h.read(first=8, count=16)
    assert rec.start_ns == T0 + 1_000_000
    np.testing.assert_allclose(rec.samples, samples[:, 8:24], atol=2 ** -22)
    doc["hydrophones"].append(doc["hydrophones"][0])
    (tmp_path / "log.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="unique names"):
        read_log(tmp_path)

