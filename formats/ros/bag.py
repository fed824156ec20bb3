"""Open a ROS bag (ROS 1 ``.bag``, ROS 2 sqlite3 ``.db3`` or MCAP ``.mcap``, or a ROS 2 bag
directory holding ``metadata.yaml``) through ``rosbags``, with one type store.

The type store holds the bag's own message definitions (every ROS 1 bag and ROS 2 bags
since Iron carry them), then the standard definitions of the bag's ROS version (rosbags'
Noetic or Humble store) for the types the bag does not define, and the definitions Fathom
ships (:data:`SHIPPED_MSGS`: ``velodyne_msgs``, which older ROS 2 bags cannot describe).
The types Fathom parses straight from the bytes (:data:`FAST_TYPES`) must match the
standard definition; a bag that redefines one makes its topics unreadable, named.

A bag stored in MCAP is read with the ``mcap`` library (its chunk index, in log-time order),
the other storages with rosbags' readers.

Errors from the container (a truncated or corrupt file, a missing index) become
:class:`BagReadError`, a :class:`FormatError` naming the bag and, while iterating, the
number of messages read before it and the last good log time.
"""

from __future__ import annotations

import heapq
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from formats.errors import FormatError

SUFFIXES = (".bag", ".db3", ".mcap")
SHIPPED_MSGS = {
    "velodyne_msgs/msg/VelodynePacket": "builtin_interfaces/Time stamp\nuint8[1206] data",
    "velodyne_msgs/msg/VelodyneScan": "std_msgs/Header header\nvelodyne_msgs/VelodynePacket[] packets",
}
_HEADER = "std_msgs/msg/Header"
# the types parsed from their bytes (formats.ros.wire) and the types their layout includes
FAST_TYPES = {
    "sensor_msgs/msg/PointCloud2": (_HEADER, "sensor_msgs/msg/PointField"),
    "sensor_msgs/msg/Image": (_HEADER,),
    "sensor_msgs/msg/CompressedImage": (_HEADER,),
    "velodyne_msgs/msg/VelodyneScan": (_HEADER, "velodyne_msgs/msg/VelodynePacket", "builtin_interfaces/msg/Time"),
}


class BagReadError(FormatError):
    """The container could not be read (on open, or part-way: ``messages_read`` messages
    were delivered, the last at log time ``last_log_ns``)."""

    def __init__(self, path: str | os.PathLike, expected: str, messages_read: int = 0,
                 last_log_ns: int | None = None) -> None:
        super().__init__(path, None, expected)
        self.messages_read = messages_read
        self.last_log_ns = last_log_ns


def is_bag(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a bag: a ``.bag``/``.db3``/``.mcap`` file or a directory
    with a ROS 2 ``metadata.yaml``."""
    p = Path(path)
    return (p.is_file() and p.suffix.lower() in SUFFIXES) or (p.is_dir() and (p / "metadata.yaml").is_file())


def bag_name(path: str | os.PathLike) -> str:
    """A bag's name: a storage file's stem, a bag directory's name (the raw log's ``log_id``)."""
    p = Path(path)
    return p.stem if p.is_file() else p.name


@dataclass(frozen=True)
class Topic:
    """A topic of the bag: name, message type (ROS 2 spelling ``pkg/msg/Name``), message
    count and whether Fathom can parse its type (``definition_error`` says why not)."""

    name: str
    msgtype: str
    count: int
    definition_error: str = ""


def _repair_hint(path: Path) -> str:
    """How a truncated or unindexed bag of this storage is repaired."""
    files = [path] if path.is_file() else list(path.iterdir())
    if path.suffix.lower() == ".bag":
        return " (a ROS 1 bag cut short or still recording has no index: `rosbag reindex` rebuilds it)"
    if any(p.suffix == ".mcap" for p in files):
        return " (an MCAP file cut short has no summary: `mcap recover` rewrites what it holds)"
    return " (a damaged sqlite3 file: `sqlite3 FILE .recover` salvages its rows)"


def _reader_errors() -> tuple[type[BaseException], ...]:
    import apsw
    from mcap.exceptions import McapError
    from rosbags.rosbag1 import ReaderError as R1
    from rosbags.rosbag2 import ReaderError as R2
    from rosbags.serde import SerdeError
    from rosbags.typesys import TypesysError

    return R1, R2, apsw.Error, McapError, SerdeError, TypesysError, OSError, EOFError, ValueError, KeyError


class Bag:
    """An open bag: its topics, raw messages in log-time order and a deserialiser."""

    def __init__(self, path: str | os.PathLike) -> None:
        from rosbags.rosbag1 import Reader as Reader1
        from rosbags.rosbag2 import Reader as Reader2

        self.path = Path(path)
        if not is_bag(self.path):
            raise FormatError(self.path, None, "a ROS bag: a .bag, .db3 or .mcap file, or a ROS 2 bag directory "
                                               "with metadata.yaml")
        self.ros1 = self.path.suffix.lower() == ".bag"
        try:
            self._reader: Any = (Reader1 if self.ros1 else Reader2)(self.path)
            self._reader.open()
        except _reader_errors() as exc:
            raise BagReadError(self.path,
                               f"a readable bag{_repair_hint(self.path)}: {type(exc).__name__}: {exc}") from None
        try:
            self._describe()
        except BaseException:
            self._reader.close()
            raise

    def _describe(self) -> None:
        """Connections, time range, type store and topics of the open reader."""
        self.connections = list(self._reader.connections)
        some = bool(self._reader.message_count)
        self.start_ns = int(self._reader.start_time) if some else 0  # first log time
        self.end_ns = int(self._reader.end_time) if some else 0      # after the last log time
        self.typestore, broken = _typestore(self.path, self.connections, self.ros1)
        counts: dict[str, int] = {}
        types: dict[str, str] = {}
        for c in self.connections:
            counts[c.topic] = counts.get(c.topic, 0) + max(c.msgcount, 0)
            if types.setdefault(c.topic, c.msgtype) != c.msgtype:
                raise FormatError(self.path, None, f"topic {c.topic}: one message type, found {types[c.topic]} and "
                                                   f"{c.msgtype}")
        self.topics = {t: Topic(t, types[t], counts[t], broken.get(types[t], "")) for t in sorted(types)}

    @property
    def storage(self) -> str:
        """``"ros1"``, ``"sqlite3"`` or ``"mcap"``."""
        if self.ros1:
            return "ros1"
        files = [self.path] if self.path.is_file() else list(self.path.iterdir())
        return "mcap" if any(p.suffix == ".mcap" for p in files) else "sqlite3"

    @property
    def compressed_files(self) -> bool:
        """Whether the bag's storage files are compressed whole (rosbag2's ``file`` mode:
        rosbags decompresses them into temporary files on opening)."""
        return not self.ros1 and self._reader.compression_mode == "file"

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def messages(self, topics: Iterable[str], stop_ns: int | None = None, start_ns: int | None = None
                 ) -> Iterator[tuple[str, int, int, bytes]]:
        """``(topic, index in topic, log time ns, serialised bytes)`` of ``topics`` in log-time
        order (messages logged before ``stop_ns`` and at or after ``start_ns`` only; the index
        counts from ``start_ns``); :class:`BagReadError` where the container breaks off."""
        wanted = set(topics)
        conns = [c for c in self.connections if c.topic in wanted]
        if not conns:
            return
        index = dict.fromkeys(wanted, 0)
        read, last = 0, None
        mcap_files = self.mcap_files()
        try:
            with ExitStack() as files:
                stream = (_mcap_messages(mcap_files, wanted, start_ns, stop_ns, files) if mcap_files else
                          ((c.topic, log_ns, raw) for c, log_ns, raw in self._reader.messages(
                              connections=conns, start=start_ns, stop=stop_ns)))
                for topic, log_ns, raw in stream:
                    k = index[topic]
                    index[topic] = k + 1
                    read, last = read + 1, log_ns
                    yield topic, k, int(log_ns), raw
        except _reader_errors() as exc:
            at = "" if last is None else f" (after {read} messages, last logged at {last} ns)"
            raise BagReadError(self.path, f"a complete bag{at}: {type(exc).__name__}: {exc}", read, last) from None

    def mcap_files(self) -> list[Path]:
        """The MCAP files of a bag stored in MCAP without per-message compression (read with
        the ``mcap`` library, which hands out each message's bytes with one copy where rosbags
        makes three); empty for the other storages."""
        storage = getattr(self._reader, "storage", None)
        parts = getattr(storage, "storages", [storage])
        found = (getattr(part, "path", None) for part in parts)
        paths = [p for p in found if isinstance(p, Path) and p.suffix == ".mcap"]
        if self.ros1 or self._reader.compression_mode == "message" or not parts or len(paths) != len(parts):
            return []
        return paths

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        """The message object of ``raw`` (rosbags' classes; ROS 1 field names kept, e.g. ``K``)."""
        if self.ros1:
            return self.typestore.deserialize_ros1(raw, msgtype)
        return self.typestore.deserialize_cdr(raw, msgtype)


def _mcap_messages(paths: list[Path], topics: set[str], start_ns: int | None, stop_ns: int | None, files: ExitStack
                   ) -> Iterator[tuple[str, int, bytes]]:
    """``(topic, log time ns, bytes)`` of ``topics`` in the MCAP files ``paths`` (opened on
    ``files``), each in log-time order through its chunk index, the files merged by log time."""
    from mcap.reader import make_reader

    streams = [((channel.topic, message.log_time, message.data) for _, channel, message in
                make_reader(files.enter_context(open(path, "rb")), validate_crcs=True).iter_messages(
                    topics=sorted(topics), starting_at=start_ns, ending_before=stop_ns, log_time_order=True))
               for path in paths]
    return heapq.merge(*streams, key=lambda m: m[1]) if len(streams) > 1 else streams[0]


def _definitions(conn: Any) -> dict[str, Any]:
    from rosbags.interfaces import MessageDefinitionFormat as F
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    d = conn.msgdef
    if d.format == F.MSG:
        return get_types_from_msg(d.data, conn.msgtype)
    if d.format == F.IDL:
        sep = "=" * 80 + "\n"
        parts = [p.split("\n", 1)[1] for p in d.data.split(sep)[1:]] if d.data.startswith(sep + "IDL: ") else [d.data]
        out: dict[str, Any] = {}
        for idl in parts:
            out.update(get_types_from_idl(idl))
        return out
    return {}


def _typestore(path: Path, connections: list[Any], ros1: bool) -> tuple[Any, dict[str, str]]:
    """The bag's definitions + the standard store's + :data:`SHIPPED_MSGS`, and the fast-parsed
    types the bag redefines (type -> why it cannot be read). The common case — the bag agrees
    with the standard definitions — only generates code for the types the standard lacks."""
    from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore

    kind = Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE
    standard = get_typestore(kind)  # a fresh copy of rosbags' module: registering stays local
    own: dict[str, Any] = {}
    parsed: set[tuple[Any, str]] = set()
    for conn in connections:
        if (conn.msgdef.format, conn.msgdef.data) in parsed:
            continue
        parsed.add((conn.msgdef.format, conn.msgdef.data))
        try:
            own.update(_definitions(conn))
        except TypesysError as exc:
            raise FormatError(path, None, f"topic {conn.topic}: a parsable {conn.msgtype} definition ({exc})") from None
    shipped: dict[str, Any] = {}
    for name, text in SHIPPED_MSGS.items():
        shipped.update(get_types_from_msg(text, name))

    def fields(defs: Any) -> list:
        return [(f[0].lower(), f[1]) for f in defs[1]]

    differ = {k for k, v in own.items() if k in standard.fielddefs and fields(v) != fields(standard.fielddefs[k])}
    try:
        if differ:  # the bag's own definitions win: a store of them, then the standard rest
            store = get_typestore(Stores.EMPTY)
            store.register(own)
            store.register({k: v for k, v in {**standard.fielddefs, **shipped}.items() if k not in store.fielddefs})
        else:
            store = get_typestore(kind)
            store.register({k: v for k, v in {**shipped, **own}.items() if k not in store.fielddefs})
    except TypesysError as exc:
        raise FormatError(path, None, f"consistent message definitions ({exc})") from None
    standard.register(shipped)
    redefined = {t for t in standard.fielddefs if t in store.fielddefs
                 and fields(store.fielddefs[t]) != fields(standard.fielddefs[t])}
    broken = {t: f"the bag defines {sorted(redefined & {t, *deps})} differently from the standard definitions "
                 f"Fathom parses" for t, deps in FAST_TYPES.items() if redefined & {t, *deps}}
    return store, broken
