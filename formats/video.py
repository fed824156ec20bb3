"""Camera streams in video containers (H.264 / H.265 in MP4 or MKV, decoded by PyAV's bundled
FFmpeg): a keyframe index built once per file, frame times in sensor time, random access.

Frame times. Frames are taken in presentation order (ascending PTS). Sensor time follows one
of two documented rules:

- stream start + PTS: ``time_ns = start_ns + round((pts − pts₀) · time_base · 1e9)``, with
  ``pts₀`` the first frame's PTS and ``start_ns`` the sensor time of that frame (the raw log
  states it). Times are exact to the stream's time base (1/90000 s in MP4 as written here,
  1 ms in Matroska).
- a sidecar: a CSV ``frame,timestamp_ns`` giving the sensor time of frame ``frame`` (0-based,
  presentation order), for cameras whose frames do not sit on the container's clock.

Frames are never given a guessed time: a packet without a PTS, a PTS already seen, a frame
the sidecar leaves out or a sidecar time not after the previous frame's is reported in
:attr:`VideoIndex.issues` and that frame is left out of the index.

Random access. The index (built by demuxing alone, no decoding) holds each frame's PTS, the
PTS of the keyframe it decodes from (the last keyframe at or before it in presentation
order), and the keyframe flags. :meth:`VideoReader.frame` seeks to that keyframe (by its
PTS, backwards: the demuxer lands on it, or on an earlier one) and decodes forward to the
frame, skipping non-reference pictures shown before it; reading on from the last decoded frame
decodes without seeking. If a frame does not come out after its keyframe (leading frames of
an open GOP), the keyframe before is tried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from formats.errors import FormatError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
CODECS = {"h264": "libx264", "hevc": "libx265"}


@dataclass(frozen=True)
class VideoIndex:
    """One video stream's frames in presentation order.

    Attributes:
        pts: ``(N,) int64`` presentation timestamps (stream time base).
        times_ns: ``(N,) int64`` sensor times, strictly increasing.
        keyframe: ``(N,) bool`` frames that are keyframes.
        seek_pts: ``(N,) int64`` PTS of the keyframe each frame decodes from.
        time_base: the stream's time base (s per tick).
        width, height, codec: the stream's size and codec name.
        issues: frames left out and why.
    """

    pts: np.ndarray
    times_ns: np.ndarray
    keyframe: np.ndarray
    seek_pts: np.ndarray
    time_base: Fraction
    width: int
    height: int
    codec: str
    issues: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.pts)

    def nearest(self, time_ns: int | np.ndarray) -> np.ndarray:
        """Index of the frame nearest each time (ties to the earlier frame); ``(Q,) int64``."""
        if len(self.times_ns) == 0:
            raise LookupError("the video has no frames with a time")
        t = np.atleast_1d(np.asarray(time_ns, np.int64))
        k = np.clip(np.searchsorted(self.times_ns, t), 1, max(len(self.times_ns) - 1, 1))
        if len(self.times_ns) == 1:
            return np.zeros(len(t), np.int64)
        before = self.times_ns[k - 1]
        after = self.times_ns[k]
        return np.where(t - before <= after - t, k - 1, k).astype(np.int64)


def read_sidecar(path: str | os.PathLike) -> dict[int, int]:
    """``frame → timestamp_ns`` of a ``frame,timestamp_ns`` CSV (header line first)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, None, f"a readable frame-time CSV ({exc})") from None
    if not lines or lines[0].strip() != "frame,timestamp_ns":
        raise FormatError(path, 0, "the header line 'frame,timestamp_ns'")
    out: dict[int, int] = {}
    for n, line in enumerate(lines[1:], 2):
        parts = line.strip().split(",")
        try:
            frame, t = int(parts[0]), int(parts[1])
            if len(parts) != 2 or frame < 0:
                raise ValueError
        except (ValueError, IndexError):
            raise FormatError(path, None, f"line {n}: 'frame,timestamp_ns' as two integers, frame >= 0") from None
        if frame in out:
            raise FormatError(path, None, f"line {n}: frame {frame} listed once, it repeats")
        out[frame] = t
    return out


def build_index(path: str | os.PathLike, *, start_ns: int = 0, sidecar: dict[int, int] | None = None) -> VideoIndex:
    """Demux the first video stream of ``path`` into a :class:`VideoIndex` (see the module rules)."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FormatError(path, None, "a video stream")
            stream = container.streams.video[0]
            rows, missing = [], 0
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream flush
                if packet.pts is None:
                    missing += 1
                    continue
                rows.append((int(packet.pts), bool(packet.is_keyframe)))
            if stream.time_base is None:
                raise FormatError(path, None, "a video stream with a time base")
            time_base = Fraction(stream.time_base)
            ctx = stream.codec_context
            width, height, codec = int(ctx.width), int(ctx.height), str(ctx.name)
    except av.error.FFmpegError as exc:
        raise FormatError(path, None, f"a video container FFmpeg reads ({exc})") from None
    issues = [f"{missing} packets without a PTS left out"] if missing else []
    table = np.array(rows, np.int64).reshape(-1, 2)
    table = table[np.argsort(table[:, 0], kind="stable")]
    dup = np.flatnonzero(np.diff(table[:, 0]) == 0) + 1
    if len(dup):
        issues.append(f"frames with a PTS already seen left out: {table[dup, 0].tolist()[:10]}")
        table = np.delete(table, dup, axis=0)
    pts, key = table[:, 0], table[:, 1].astype(bool)
    if sidecar is None:
        times = start_ns + np.array([round((p - pts[0]) * time_base * 1_000_000_000) for p in pts.tolist()], np.int64)
        keep = np.ones(len(pts), bool)
    else:
        times, keep = _sidecar_times(sidecar, len(pts), issues)
    last_key = np.maximum.accumulate(np.where(key, np.arange(len(key)), -1))
    if len(key) and last_key[0] < 0:
        issues.append(f"{int(np.sum(last_key < 0))} frames before the first keyframe left out")
        keep &= last_key >= 0
    seek = pts[np.maximum(last_key, 0)]
    return VideoIndex(pts[keep], times[keep], key[keep], seek[keep], time_base, width, height, codec, tuple(issues))


def _sidecar_times(sidecar: dict[int, int], n: int, issues: list[str]) -> tuple[np.ndarray, np.ndarray]:
    times = np.array([sidecar.get(i, 0) for i in range(n)], np.int64)
    keep = np.array([i in sidecar for i in range(n)], bool)
    if not keep.all():
        issues.append(f"frames without a sidecar time left out: {np.flatnonzero(~keep).tolist()[:10]}")
    extra = sorted(k for k in sidecar if k >= n)
    if extra:
        issues.append(f"sidecar rows for frames the video does not have: {extra[:10]}")
    last = None
    for i in np.flatnonzero(keep):
        if last is not None and times[i] <= last:
            keep[i] = False
            issues.append(f"frame {i}: sidecar time {times[i]} not after the previous frame's {last}; left out")
        else:
            last = times[i]
    return times, keep


class VideoReader:
    """Decoded frames of one video file by index or time (RGB ``(H, W, 3) uint8``). Not thread
    safe: give each thread its own reader."""

    def __init__(self, path: str | os.PathLike, *, start_ns: int = 0, sidecar: dict[int, int] | None = None,
                 index: VideoIndex | None = None):
        import av

        self.path = Path(path)
        self.index = build_index(self.path, start_ns=start_ns, sidecar=sidecar) if index is None else index
        self._container = av.open(str(self.path))
        self._stream = self._container.streams.video[0]
        self._length_size = _nal_length_size(self._stream.codec_context)
        self._skip_below = 0  # non-reference packets shown before this PTS are not decoded
        self._frames: Iterator | None = None
        self._next = -1  # index position the open decoder yields next (-1: none)
        self._pos = {int(p): i for i, p in enumerate(self.index.pts)}

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frame(self, i: int) -> np.ndarray:
        """The RGB frame at index position ``i``."""
        if not 0 <= i < len(self.index):
            raise IndexError(f"{self.path}: frame {i} of {len(self.index)}")
        # decode on from the last frame when ``i`` is ahead of it in the same GOP, else seek
        if 0 <= self._next <= i and self.index.seek_pts[i] == self.index.seek_pts[min(self._next, i)]:
            out = self._decode_to(i)
            if out is not None:
                return out
        return self._seek_decode(i)

    def frame_at(self, time_ns: int) -> tuple[int, int, np.ndarray]:
        """``(index, time_ns, rgb)`` of the frame nearest ``time_ns``."""
        i = int(self.index.nearest(time_ns)[0])
        return i, int(self.index.times_ns[i]), self.frame(i)

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every indexed frame in order: ``(time_ns, rgb)``, decoded sequentially."""
        for i in range(len(self.index)):
            yield int(self.index.times_ns[i]), self.frame(i)

    def _seek_decode(self, i: int) -> np.ndarray:
        key = int(np.searchsorted(self.index.seek_pts, self.index.seek_pts[i], side="left"))
        for start in (int(self.index.seek_pts[i]), int(self.index.seek_pts[max(key - 1, 0)])):
            self._container.seek(start, stream=self._stream, backward=True, any_frame=False)
            self._frames = self._decoded()
            out = self._decode_to(i)
            if out is not None:
                return out
        raise FormatError(self.path, None, f"frame {i} (pts {int(self.index.pts[i])}) to decode after its keyframe")

    def _decoded(self) -> Iterator:
        """Frames from the demuxer's position on; a non-reference picture shown before the
        frame asked for (:attr:`_skip_below`) is not decoded: nothing needs it."""
        for packet in self._container.demux(self._stream):
            if (packet.size and packet.pts is not None and packet.pts < self._skip_below
                    and _non_reference(bytes(packet), self._length_size, self.index.codec)):
                continue
            yield from packet.decode()

    def _decode_to(self, i: int) -> np.ndarray | None:
        target = int(self.index.pts[i])
        self._skip_below = target
        assert self._frames is not None
        for frame in self._frames:
            if frame.pts is None:
                continue
            pos = self._pos.get(int(frame.pts))
            if pos is None:
                continue  # a frame left out of the index
            self._next = pos + 1
            if frame.pts == target:
                return frame.to_ndarray(format="rgb24")
            if frame.pts > target:
                self._next = -1
                return None
        self._next = -1
        return None


def _nal_length_size(ctx) -> int:
    """Bytes of each NAL unit's length prefix from the avcC / hvcC extradata (0: unknown)."""
    extra = bytes(ctx.extradata or b"")
    if ctx.name == "h264" and len(extra) > 4 and extra[0] == 1:
        return (extra[4] & 3) + 1
    if ctx.name == "hevc" and len(extra) > 21 and extra[0] == 1:
        return (extra[21] & 3) + 1
    return 0


def _non_reference(data: bytes, length_size: int, codec: str) -> bool:
    """Whether a length-prefixed access unit's pictures are all non-reference (H.264
    ``nal_ref_idc`` 0; H.265 sub-layer non-reference types 0, 2, ..., 14). False when unsure."""
    if length_size == 0:
        return False
    i, vcl = 0, 0
    while i + length_size < len(data):
        n = int.from_bytes(data[i:i + length_size], "big")
        head = data[i + length_size]
        if codec == "h264" and (head & 0x1F) in (1, 5):
            if head & 0x60:
                return False
            vcl += 1
        elif codec == "hevc" and (head >> 1) & 0x3F < 32:
            t = (head >> 1) & 0x3F
            if t >= 16 or t % 2:
                return False
            vcl += 1
        i += length_size + n
    return vcl > 0 and i == len(data)


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray] | np.ndarray, times_ns: np.ndarray, *,
                codec: str = "h264", gop: int = 12, crf: int = 18, bframes: int = 2, preset: str = "medium",
                time_base: Fraction = Fraction(1, 90000)) -> Path:
    """Encode RGB ``frames (N, H, W, 3) uint8`` at ``times_ns (N,)`` (strictly increasing,
    relative to the first) as H.264 or H.265 (``codec`` "h264"/"hevc") in MP4 or MKV; a
    keyframe every ``gop`` frames. The stream's ``start_ns`` is ``times_ns[0]``."""
    import av

    path = Path(path)
    t = np.asarray(times_ns, np.int64)
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if len(frames) != len(t) or len(t) == 0 or np.any(np.diff(t) <= 0):
        raise ValueError("need one strictly increasing time per frame, at least one frame")
    pts = [round(Fraction(int(v - t[0]), 1_000_000_000) / time_base) for v in t]
    h, w = np.asarray(frames[0]).shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream: Any = container.add_stream(CODECS[codec], rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = time_base
        params: dict[str, str] = {"crf": str(crf), "g": str(gop), "bf": str(bframes), "keyint_min": str(gop),
                                  "preset": preset}
        if codec == "hevc":
            params = {"crf": str(crf), "preset": preset,
                      "x265-params": f"keyint={gop}:min-keyint={gop}:bframes={bframes}:log-level=error"}
        stream.options = params
        for img, p in zip(frames, pts):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img, np.uint8), format="rgb24")
            vf.pts, vf.time_base = p, time_base
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
