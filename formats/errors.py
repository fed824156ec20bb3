"""The typed error every reader raises on bad input, and the one way readers load input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class FormatError(ValueError):
    """Input bytes do not match the format.

    Attributes:
        path: the file (or ``"<bytes>"`` for in-memory input).
        offset: byte offset where the problem was found, or None if not tied to one.
        expected: what the reader expected to find there.
    """

    def __init__(self, path: str | os.PathLike | None, offset: int | None, expected: str):
        self.path = "<bytes>" if path is None else os.fspath(path)
        self.offset = offset
        self.expected = expected
        where = self.path if offset is None else f"{self.path} @ byte {offset}"
        super().__init__(f"{where}: {expected}")


def load_source(source: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[str | os.PathLike | None, bytes]:
    """``(path or None, bytes)`` of a reader's input: a file path or in-memory bytes.

    An unreadable file raises :class:`FormatError` naming it.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None, bytes(source)
    try:
        return source, _read_file(source)
    except OSError as err:
        raise FormatError(source, None, f"a readable file ({err.strerror})") from None


def _read_file(path: str | os.PathLike) -> bytes:
    """The whole file, by plain system calls (a small file costs half of ``open().read()``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        parts = [os.read(fd, size + 1)]  # all of a regular file: fewer bytes than asked is its end
        if len(parts[0]) <= size:
            return parts[0]
        while parts[-1]:  # it grew, or it is not a regular file (st_size 0)
            parts.append(os.read(fd, 1 << 16))
        return b"".join(parts)
    finally:
        os.close(fd)


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed JSON document at ``path``; an unreadable file or invalid JSON raises
    :class:`FormatError` naming the file (and the byte offset of a syntax error)."""
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise FormatError(path, None, f"a readable {what} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise FormatError(path, exc.pos, f"valid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise FormatError(path, exc.start, f"UTF-8 JSON ({exc.reason})") from None


def ascii_lines(data: bytes, path: Any) -> list[tuple[int, str]]:
    """``(byte offset, stripped line)`` of the non-blank lines of ASCII text ``data``;
    ``FormatError`` naming ``path`` and the offset of a line that is not ASCII."""
    out, offset = [], 0
    for raw in data.split(b"\n"):
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise FormatError(path, offset, "an ASCII text line") from None
        if line:
            out.append((offset, line))
        offset += len(raw) + 1
    return out
