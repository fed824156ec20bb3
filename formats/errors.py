"""The typed error every reader raises on bad input."""

from __future__ import annotations

import os


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
