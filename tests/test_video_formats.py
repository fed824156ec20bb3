"""Camera streams as video: the rig's frames encoded to H.264/H.265 (MP4, MKV, MCAP
CompressedVideo) decode to the same frames at the same times, by random access at any time;
timestamps missing or out of order are reported, never guessed."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from engine.sim.road import simulate_drive
from formats.errors import FormatError
from formats.video import VideoReader, build_index, read_sidecar, write_video
from formats.video_mcap import McapVideoReader, decode_message, encode_message, write_mcap_video

EXPOSURE_NS = 50_000_000
CRF = 16
# dB: the codec's loss on the rig's frames, mostly 4:2:0 chroma on their sharp colour edges (29.6 dB
# even at CRF 0); neighbouring source frames differ by 25 dB or less, so a decoded frame is
# also checked to be closer to its own source frame than to any other
MIN_PSNR = 28.0


@pytest.fixture(scope="module")
def rig_frames():
    """The test rig's front and fisheye camera over 3 s at 10 Hz: ``{name: (frames, times_ns)}``."""
    drive = simulate_drive(seed=1, duration_s=3.0, preset="test")
    out = {}
    for cam in (drive.cameras[0], drive.cameras[2]):
        times = drive.frame_times_ns + EXPOSURE_NS
        out[cam.name] = (np.stack([drive.render(cam.name, int(t)).rgb for t in times]), times.astype(np.int64))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def check_reader(reader, frames: np.ndarray, times: np.ndarray, min_psnr: float) -> None:
    """Every time (frame times and times between them) returns the nearest frame, decoded
    within the codec's loss and closer to its own source frame than to any other."""
    np.testing.assert_array_equal(reader.index.times_ns, times)
    gaps = np.diff(times)
    queries = np.concatenate([times, times[:-1] + gaps // 2, times[:-1] + gaps // 2 + 1, [times[0] - 10**9],
                              [times[-1] + 10**9]])
    order = np.random.default_rng(0).permutation(len(queries))
    for q in queries[order]:
        want = int(np.argmin(np.abs(times - q) * 2 + (times > q)))  # nearest, ties to the earlier frame
        i, t, img = reader.frame_at(int(q))
        assert (i, t) == (want, times[want]), q
        scores = [psnr(img, f) for f in frames]
        assert scores[want] >= min_psnr and int(np.argmax(scores)) == want, (q, scores[want])


@pytest.mark.parametrize("camera,suffix,codec", [("CAM_FRONT", ".mp4", "h264"), ("CAM_LEFT_FISHEYE", ".mkv", "hevc"),
                                                 ("CAM_FRONT", ".mkv", "h264")])
def test_container_frames_decode_at_their_times(tmp_path, rig_frames, camera, suffix, codec):
    frames, times = rig_frames[camera]
    path = write_video(tmp_path / f"cam{suffix}", frames, times, codec=codec, gop=8, crf=CRF)
    index = build_index(path, start_ns=int(times[0]))
    assert index.issues == () and index.codec == codec and (index.width, index.height) == frames.shape[2:0:-1]
    assert np.flatnonzero(index.keyframe).tolist() == list(range(0, len(times), 8))
    with VideoReader(path, start_ns=int(times[0]), index=index) as reader:
        check_reader(reader, frames, times, MIN_PSNR)
        # sequential decoding gives the same frames
        for (t, img), want_t, src in zip(reader.frames(), times, frames):
            assert t == want_t and psnr(img, src) >= MIN_PSNR


def test_pts_rule_uses_the_stream_time_base(tmp_path, rig_frames):
    frames, times = rig_frames["CAM_FRONT"]
    jitter = times[:12] + np.array([0, 3, 0, 17, 1, 0, 0, 9, 0, 0, 0, 2]) * 1_000_000  # irregular, ms steps
    path = write_video(tmp_path / "cam.mkv", frames[:12], jitter)
    with av.open(str(path)) as c:
        tb = c.streams.video[0].time_base
    index = build_index(path, start_ns=int(jitter[0]))
    assert tb == Fraction(1, 1000)  # Matroska: milliseconds, so these times survive exactly
    np.testing.assert_array_equal(index.times_ns, jitter)
    np.testing.assert_array_equal(index.pts, (jitter - jitter[0]) // 1_000_000)


def test_sidecar_times_and_their_faults_are_reported(tmp_path, rig_frames):
    frames, times = rig_frames["CAM_FRONT"]
    path = write_video(tmp_path / "cam.mp4", frames[:10], times[:10])
    sensor = 5_000_000_000 + np.arange(10) * 33_000_000
    rows = {i: int(sensor[i]) for i in range(10) if i != 4}
    rows[7] = int(sensor[5])  # not after frame 6's time
    rows[12] = 1  # a frame the video does not have
    csv = tmp_path / "cam.times.csv"
    csv.write_text("frame,timestamp_ns\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    index = build_index(path, sidecar=read_sidecar(csv))
    keep = [0, 1, 2, 3, 5, 6, 8, 9]
    np.testing.assert_array_equal(index.times_ns, sensor[keep])
    text = " | ".join(index.issues)
    assert "without a sidecar time left out: [4]" in text and "frame 7" in text and "[12]" in text
    with VideoReader(path, index=index) as reader:
        i, t, img = reader.frame_at(int(sensor[8]) - 1)
        assert (i, t) == (6, sensor[8]) and int(np.argmax([psnr(img, f) for f in frames[:10]])) == 8
    for bad in ("frame;t\n", "frame,timestamp_ns\n1,x\n", "frame,timestamp_ns\n1,2\n1,3\n"):
        csv.write_text(bad)
        with pytest.raises(FormatError):
            read_sidecar(csv)


def test_a_repeated_pts_is_reported_and_left_out(tmp_path, rig_frames):
    frames, times = rig_frames["CAM_FRONT"]
    src = write_video(tmp_path / "src.mkv", frames[:10], times[:10], bframes=0)
    out = tmp_path / "dup.mkv"
    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        s_in = inp.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for k, packet in enumerate(inp.demux(s_in)):
            if packet.size == 0:
                continue
            if k == 5:  # the PTS (and DTS: no B-frames) of frame 4 again
                packet.pts = packet.dts = packet.pts - 100
            packet.stream = s_out
            dst.mux(packet)
    index = build_index(out, start_ns=int(times[0]))
    assert len(index) == 9 and index.issues == ("frames with a PTS already seen left out: [400]",)
    np.testing.assert_array_equal(index.times_ns, np.delete(times[:10], 5))


def test_bad_files_are_format_errors(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(FormatError):
        build_index(tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match="strictly increasing"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 0]))


# ---------------------------------------------------------------- MCAP


@pytest.mark.parametrize("encoding", ["protobuf", "json", "cdr"])
def test_message_codecs_round_trip(encoding):
    for ts, data, fmt in ((1_700_000_000_123_456_789, b"\0\0\1\x65abc", "h264"), (1, b"", "h265")):
        assert decode_message(encoding, encode_message(encoding, ts, data, fmt, "cam")) == (ts, data, fmt)


@pytest.mark.parametrize("encoding,fmt", [("protobuf", "h264"), ("json", "h265"), ("cdr", "h264")])
def test_mcap_compressed_video_decodes_at_its_times(tmp_path, rig_frames, encoding, fmt):
    frames, times = rig_frames["CAM_FRONT"]
    path = write_mcap_video(tmp_path / "cam.mcap", frames, times, encoding=encoding, fmt=fmt, gop=10, crf=CRF)
    reader = McapVideoReader(path)
    assert reader.topic == "/camera/video" and reader.index.issues == ()
    assert np.flatnonzero(reader.index.keyframe).tolist() == list(range(0, len(times), 10))
    check_reader(reader, frames, times, MIN_PSNR)


def test_mcap_timestamps_out_of_order_are_reported(tmp_path, rig_frames):
    from mcap.writer import Writer

    frames, times = rig_frames["CAM_FRONT"]
    good = McapVideoReader(write_mcap_video(tmp_path / "a.mcap", frames[:12], times[:12], gop=4))
    stamps = times[:12].copy()
    stamps[5] = stamps[3]  # goes back
    stamps[9] = 0  # missing
    with open(good.path, "rb") as f:
        from mcap.reader import make_reader

        msgs = [(m.log_time, m.data) for _, _, m in make_reader(f).iter_messages()]
    with open(tmp_path / "b.mcap", "wb") as f:
        w = Writer(f)
        w.start()
        cid = w.register_channel("/cam", "protobuf", w.register_schema("foxglove.CompressedVideo", "protobuf", b""))
        for (log_time, data), ts in zip(msgs, stamps):
            _, frame, fmt = decode_message("protobuf", data)
            w.add_message(cid, log_time, encode_message("protobuf", int(ts), frame, fmt), log_time)
        w.finish()
    reader = McapVideoReader(tmp_path / "b.mcap")
    keep = [0, 1, 2, 3, 4, 6, 7, 8, 10, 11]
    np.testing.assert_array_equal(reader.index.times_ns, times[keep])
    assert len(reader.index.issues) == 2 and "not after" in reader.index.issues[0]
    for k, i in enumerate(keep):  # frames after a left-out one still decode (their GOP is intact)
        assert int(np.argmax([psnr(reader.frame(k), f) for f in frames[:12]])) == i
    with pytest.raises(FormatError, match="CompressedVideo"):
        McapVideoReader(tmp_path / "b.mcap", topic="/other")
