"""Readers and writers: bytes ⇄ engine types, one module per format.

``formats.registry.read_points(path)`` picks a point-cloud reader by suffix; every reader
raises :class:`formats.errors.FormatError` (path, byte offset, what was expected) on bad input.
"""

from __future__ import annotations


def warmup() -> None:
    """Compile (or load from cache) the numba kernels of every format module."""
    import importlib
    import pkgutil

    import formats

    for info in pkgutil.walk_packages(formats.__path__, "formats."):
        hook = getattr(importlib.import_module(info.name), "_warmup", None)
        if callable(hook):
            hook()
