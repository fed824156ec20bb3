"""Camera streams recorded in MCAP as ``foxglove.CompressedVideo`` messages.

Each message carries one H.264 or H.265 frame in Annex B byte-stream form (keyframes with
their parameter sets), ``format`` "h264" / "h265", and ``timestamp``: the frame's sensor time,
which is the frame time here (the log time only orders and locates messages). The three
encodings Foxglove defines are read: ``protobuf`` (schema ``foxglove.CompressedVideo``),
``json`` (data in base64) and ``cdr`` (ROS 2 ``foxglove_msgs/msg/CompressedVideo``).

Frames follow message (log time) order; Foxglove's format has no B-frames, so decode order
is presentation order. A keyframe is a message holding an IDR (H.264 NAL type 5) or IRAP
(H.265 NAL types 16-23) picture. A message without a timestamp (zero), or with one not after
the previous frame's, is reported in :attr:`VideoIndex.issues` and left out, never
re-timed; so is a message whose format differs from the stream's, and frames before the
first keyframe. :meth:`McapVideoReader.frame` decodes from the frame's keyframe, reading only
the chunks whose log times span it.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from formats.errors import FormatError
from formats.video import VideoIndex

SCHEMAS = ("foxglove.CompressedVideo", "foxglove_msgs/msg/CompressedVideo", "foxglove_msgs/CompressedVideo")
DECODERS = {"h264": "h264", "h265": "hevc"}


# ---------------------------------------------------------------- message codecs


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, int or bytes) of a protobuf message (wire types 0, 1, 2, 5)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated length-delimited field")
            value, i = buf[i:i + n], i + n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"wire type {wire}")
        yield field, value


def decode_message(encoding: str, data: bytes) -> tuple[int, bytes, str]:
    """``(timestamp_ns, frame bytes, format)`` of one CompressedVideo message."""
    if encoding == "protobuf":
        ts, frame, fmt = 0, b"", ""
        for field, value in _proto_fields(data):
            if field == 1:
                parts = dict(_proto_fields(value))
                sec = parts.get(1, 0)
                sec = sec - (1 << 64) if sec >= 1 << 63 else sec
                ts = sec * 1_000_000_000 + parts.get(2, 0)
            elif field == 3:
                frame = bytes(value)
            elif field == 4:
                fmt = bytes(value).decode()
        return ts, frame, fmt
    if encoding == "json":
        doc = json.loads(data)
        t = doc["timestamp"]
        return int(t["sec"]) * 1_000_000_000 + int(t["nsec"]), base64.b64decode(doc["data"]), str(doc["format"])
    if encoding == "cdr":  # little-endian CDR after the 4-byte encapsulation header
        body = memoryview(data)[4:]

        def chunk(pos: int) -> tuple[bytes, int]:
            n = struct.unpack_from("<I", body, pos)[0]
            if pos + 4 + n > len(body):
                raise ValueError("truncated sequence")
            return bytes(body[pos + 4:pos + 4 + n]), pos + 4 + n

        sec, nsec = struct.unpack_from("<iI", body, 0)
        _, pos = chunk(8)  # frame_id
        frame, pos = chunk((pos + 3) & ~3)
        name, _ = chunk((pos + 3) & ~3)
        return sec * 1_000_000_000 + nsec, frame, name.rstrip(b"\0").decode()
    raise ValueError(f"message encoding {encoding!r}")


def encode_message(encoding: str, timestamp_ns: int, frame: bytes, fmt: str, frame_id: str = "camera") -> bytes:
    """One CompressedVideo message in ``encoding`` (the inverse of :func:`decode_message`)."""
    sec, nsec = divmod(int(timestamp_ns), 1_000_000_000)
    if encoding == "protobuf":
        def varint(v: int) -> bytes:
            v &= (1 << 64) - 1
            out = bytearray()
            while True:
                out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
                v >>= 7
                if not v:
                    return bytes(out)

        def field(n: int, payload: bytes) -> bytes:
            return varint(n << 3 | 2) + varint(len(payload)) + payload

        stamp = varint(1 << 3) + varint(sec) + varint(2 << 3) + varint(nsec)
        return field(1, stamp) + field(2, frame_id.encode()) + field(3, frame) + field(4, fmt.encode())
    if encoding == "json":
        return json.dumps({"timestamp": {"sec": sec, "nsec": nsec}, "frame_id": frame_id,
                           "data": base64.b64encode(frame).decode(), "format": fmt}).encode()
    if encoding == "cdr":
        def chunk(body: bytes, payload: bytes) -> bytes:  # 4-aligned length, then the bytes
            body += b"\0" * (-len(body) % 4)
            return body + struct.pack("<I", len(payload)) + payload

        body = struct.pack("<iI", sec, nsec)
        body = chunk(body, frame_id.encode() + b"\0")
        body = chunk(body, frame)
        body = chunk(body, fmt.encode() + b"\0")
        return b"\0\x01\0\0" + body
    raise ValueError(f"message encoding {encoding!r}")


def is_keyframe(frame: bytes, fmt: str) -> bool:
    """Whether an Annex B access unit holds an IDR (H.264) or IRAP (H.265) picture."""
    for start in _nal_starts(frame):
        if start >= len(frame):
            continue
        b = frame[start]
        if fmt == "h264" and b & 0x1F == 5:
            return True
        if fmt == "h265" and 16 <= (b >> 1) & 0x3F <= 23:
            return True
    return False


def _nal_starts(frame: bytes) -> Iterator[int]:
    i = frame.find(b"\0\0\1")
    while i >= 0:
        yield i + 3
        i = frame.find(b"\0\0\1", i + 3)


# ---------------------------------------------------------------- index and reader


def _video_messages(path: Path, topic: str | None, start: int | None = None, end: int | None = None
                    ) -> Iterator[tuple[str, int, bytes, str]]:
    """``(topic, log_time, message bytes, encoding)`` of the CompressedVideo channels."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as f:
            reader = make_reader(f)
            for schema, channel, message in reader.iter_messages(
                    topics=None if topic is None else [topic], starting_at=start, ending_before=end):
                if schema is not None and schema.name in SCHEMAS:
                    yield channel.topic, message.log_time, message.data, channel.message_encoding
    except (McapError, OSError, struct.error, ValueError) as exc:
        raise FormatError(path, None, f"a readable MCAP file ({type(exc).__name__}: {exc})") from None


def build_mcap_index(path: str | os.PathLike, topic: str | None = None) -> tuple[VideoIndex, str]:
    """The :class:`~formats.video.VideoIndex` of one CompressedVideo topic (the first found
    when None) and that topic; ``pts`` and ``seek_pts`` hold log times (ns)."""
    path = Path(path)
    rows: list[tuple[int, int, bool]] = []
    issues: list[str] = []
    fmt = None
    seen = 0
    for name, log_time, data, encoding in _video_messages(path, topic):
        topic = name if topic is None else topic
        if name != topic:
            continue
        seen += 1
        try:
            ts, frame, f = decode_message(encoding, data)
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
            issues.append(f"message at log time {log_time}: not a CompressedVideo ({exc}); left out")
            continue
        fmt = f if fmt is None else fmt
        if f != fmt or f not in DECODERS:
            issues.append(f"message at log time {log_time}: format {f!r}, the stream's is {fmt!r}; left out")
        elif ts <= 0:
            issues.append(f"message at log time {log_time}: no timestamp; left out")
        elif rows and ts <= rows[-1][1]:
            issues.append(f"message at log time {log_time}: timestamp {ts} not after the previous frame's "
                          f"{rows[-1][1]}; left out")
        else:
            rows.append((log_time, ts, is_keyframe(frame, f)))
    if seen == 0:
        raise FormatError(path, None, f"a foxglove.CompressedVideo channel{'' if topic is None else ' ' + topic}")
    logged = np.array([r[0] for r in rows], np.int64)
    times = np.array([r[1] for r in rows], np.int64)
    key = np.array([r[2] for r in rows], bool)
    last_key = np.maximum.accumulate(np.where(key, np.arange(len(key)), -1)) if len(key) else np.zeros(0, np.int64)
    keep = last_key >= 0
    if not keep.all():
        issues.append(f"{int(np.sum(~keep))} frames before the first keyframe left out")
    seek = logged[np.maximum(last_key, 0)] if len(key) else logged
    index = VideoIndex(logged[keep], times[keep], key[keep], seek[keep], Fraction(1, 1_000_000_000), 0, 0,
                       DECODERS.get(fmt or "", "none"), tuple(issues))
    return index, str(topic)


class McapVideoReader:
    """Decoded frames (RGB ``(H, W, 3) uint8``) of one CompressedVideo topic by index or time."""

    def __init__(self, path: str | os.PathLike, topic: str | None = None):
        self.path = Path(path)
        self.index, self.topic = build_mcap_index(self.path, topic)

    def frame(self, i: int) -> np.ndarray:
        """The RGB frame at index position ``i`` (decoded from its keyframe)."""
        import av

        if not 0 <= i < len(self.index):
            raise IndexError(f"{self.path}: frame {i} of {len(self.index)}")
        ctx: Any = av.CodecContext.create(self.index.codec, "r")
        target = int(self.index.pts[i])
        out = None
        for _, log_time, data, encoding in _video_messages(self.path, self.topic, int(self.index.seek_pts[i]),
                                                           target + 1):
            try:  # every message of the span is decoded: frames left out of the index are still references
                packet = av.Packet(decode_message(encoding, data)[1])
            except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
                continue
            frames = ctx.decode(packet)
            if log_time == target:
                frames += ctx.decode(None)  # drain: the target is the last frame wanted
                out = frames[-1].to_ndarray(format="rgb24") if frames else None
        if out is None:
            raise FormatError(self.path, None, f"frame {i} (log time {target}) to decode after its keyframe")
        return out

    def frame_at(self, time_ns: int) -> tuple[int, int, np.ndarray]:
        """``(index, time_ns, rgb)`` of the frame nearest ``time_ns``."""
        i = int(self.index.nearest(time_ns)[0])
        return i, int(self.index.times_ns[i]), self.frame(i)


def write_mcap_video(path: str | os.PathLike, frames: np.ndarray, times_ns: np.ndarray, *, encoding: str = "protobuf",
                     fmt: str = "h264", topic: str = "/camera/video", gop: int = 10, crf: int = 18) -> Path:
    """RGB ``frames (N, H, W, 3)`` encoded (no B-frames, a keyframe every ``gop``) as
    CompressedVideo messages at ``times_ns`` (log time = timestamp)."""
    import av
    from mcap.writer import Writer

    schema_names = {"protobuf": "foxglove.CompressedVideo", "json": "foxglove.CompressedVideo",
                    "cdr": "foxglove_msgs/msg/CompressedVideo"}
    schema_encodings = {"protobuf": "protobuf", "json": "jsonschema", "cdr": "ros2msg"}
    codec = {"h264": "libx264", "h265": "libx265"}[fmt]
    ctx: Any = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    ctx.time_base = Fraction(1, 1_000_000)
    ctx.options = ({"crf": str(crf), "g": str(gop), "bf": "0", "x264-params": "repeat-headers=1"} if fmt == "h264" else
                   {"crf": str(crf),
                    "x265-params": f"keyint={gop}:min-keyint={gop}:bframes=0:repeat-headers=1:log-level=error"})
    packets = []
    for k, img in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img, np.uint8), format="rgb24")
        vf.pts = int((times_ns[k] - times_ns[0]) // 1000)
        packets += ctx.encode(vf)
    packets += ctx.encode(None)
    path = Path(path)
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start()
        sid = writer.register_schema(schema_names[encoding], schema_encodings[encoding], b"")
        cid = writer.register_channel(topic, encoding, sid)
        for t, packet in zip(times_ns, packets):
            writer.add_message(cid, int(t), encode_message(encoding, int(t), bytes(packet), fmt), int(t))
        writer.finish()
    return path
