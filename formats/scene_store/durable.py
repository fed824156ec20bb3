"""Atomic, digested and (when asked) durable file writes for the scene store.

Every file is written to a temporary ``.NAME.PID-SERIAL.tmp`` beside it and renamed over its
name; the XXH3-128 digest is computed from the bytes while they are written. Points files of
a megabyte or more go to disk with ``O_DIRECT`` where the filesystem offers it; the rest
through the page cache with their write-back started at once (``sync_file_range``). See the
package docstring for when what is fsynced.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import mmap
import os
import threading
from pathlib import Path
from typing import Any, Sequence, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import xxhash

from formats.scene_store.manifest import StoredFile

FileData: TypeAlias = bytes | memoryview | pa.Buffer | np.ndarray | pa.Table  # a table is written as an Arrow IPC file


def write_arrow_file(table: pa.Table, sink: Any) -> None:
    """Serialise a point table into ``sink`` (a writable file object or Arrow stream) as one
    uncompressed Arrow IPC file holding one record batch."""
    out = sink if isinstance(sink, pa.NativeFile) else pa.PythonFile(sink, mode="w")
    with ipc.new_file(out, table.schema) as writer:
        writer.write_table(table.combine_chunks(), max_chunksize=max(len(table), 1))


def _libc(name: str, *argtypes):
    """A Linux libc function through ctypes (``sync_file_range``, ``syncfs``); None elsewhere."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _libc("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_SYNC_FILE_RANGE_WRITE = 2
_SYNCFS = _libc("syncfs", ctypes.c_int)


def _start_writeback(fd: int) -> None:
    """Start writing the file's dirty pages to disk without waiting (Linux), so the fsync of
    :meth:`SceneWriter.finalize` finds them written while the job went on computing."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # advisory: a failure costs only time


def fsync_dir(directory: Path) -> None:
    """fsync a directory (makes the renames into it durable)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingFile:
    """A minimal raw, write-only file over an open descriptor that digests (XXH3-128) and
    counts what it writes; :func:`write_arrow_file` streams into it through ``pa.PythonFile``,
    so a point table goes to disk without an intermediate full-size buffer."""

    closed = False

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = xxhash.xxh3_128()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview | pa.Buffer) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        done = 0
        while done < view.nbytes:
            done += os.write(self.fd, view[done:])
        self.size += done
        return done

    def flush(self) -> None:
        pass


_TEMPORARY_SERIAL = itertools.count()


def _create_temporary(path: Path, flags: int = 0) -> tuple[int, Path]:
    """Create and open (write-only, mode 0666 less the umask, plus ``flags``) a new
    temporary file ``.NAME.PID-SERIAL.tmp`` beside ``path``; the name is unique among live
    writers (process id) and ``O_EXCL`` skips one left by a dead process that had the same id."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{next(_TEMPORARY_SERIAL)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | flags, 0o666), tmp
        except FileExistsError:
            continue


_DIRECT_ALIGN = 4096  # O_DIRECT: buffer address, length and file offset multiples of the block size
_DIRECT_MIN_BYTES = 1 << 20  # smaller files go through the page cache
_direct_buffers = threading.local()  # each writing thread's reusable page-aligned buffer


def _direct_buffer(size: int) -> mmap.mmap:
    """This thread's page-aligned buffer of at least ``size`` bytes (grown in 8 MiB steps,
    kept for the next file: memory touched once, not faulted in again per frame)."""
    buf = getattr(_direct_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = mmap.mmap(-1, -(-size // (8 << 20)) * (8 << 20))
        _direct_buffers.buf = buf
    return buf


def _write_direct(path: Path, table: pa.Table) -> tuple[StoredFile, Path] | None:
    """Write ``table`` as an Arrow IPC file to a new temporary beside ``path`` with
    ``O_DIRECT``: its :class:`StoredFile` (named ``path``) and the temporary; None (nothing
    left behind) for a small file or where the filesystem refuses direct I/O."""
    counter = pa.MockOutputStream()  # the file's size, without copying its buffers
    write_arrow_file(table, counter)
    size = counter.size()
    if size < _DIRECT_MIN_BYTES or not hasattr(os, "O_DIRECT"):
        return None
    try:
        fd, tmp = _create_temporary(path, os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # no direct I/O on this filesystem (tmpfs...)
            return None
        raise
    try:
        padded = -(-size // _DIRECT_ALIGN) * _DIRECT_ALIGN
        buf = _direct_buffer(padded)
        write_arrow_file(table, pa.FixedSizeBufferWriter(pa.py_buffer(buf)))
        view = memoryview(buf)[:padded]
        done = 0
        while done < padded:
            done += os.write(fd, view[done:])
        os.ftruncate(fd, size)  # drop the block padding
        digest = xxhash.xxh3_128(view[:size]).hexdigest()
    except BaseException as exc:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.EINVAL:  # refused at the first write
            return None
        raise
    os.close(fd)
    return StoredFile(str(path), size, digest), tmp


def replace_files(files: Sequence[tuple[Path, FileData]], durable: bool) -> list[StoredFile]:
    """Replace each ``path`` with its ``data`` atomically: every temp file (in the path's
    directory) written (a ``pa.Table`` serialised by :func:`write_arrow_file` straight into
    it, or with direct I/O: :func:`_write_direct`), with ``durable`` then every one fsynced
    (the first fsync's journal commit carries most of the others), then each renamed over
    its path. The caller fsyncs the directories. Returns the :class:`StoredFile` of each
    (digest of the bytes written)."""
    temps: list[tuple[Path, Path]] = []
    out = []
    try:
        for path, data in files:
            direct = _write_direct(path, data) if isinstance(data, pa.Table) else None
            if direct is not None:
                out.append(direct[0])
                temps.append((path, direct[1]))
                continue
            fd, tmp = _create_temporary(path)
            temps.append((path, tmp))
            sink = _HashingFile(fd)
            try:
                if isinstance(data, pa.Table):
                    write_arrow_file(data, sink)
                else:
                    sink.write(data)
                if not durable:
                    _start_writeback(fd)
            finally:
                os.close(fd)
            out.append(StoredFile(str(path), sink.size, sink.digest.hexdigest()))
        if durable:
            fsync_files([tmp for _, tmp in temps], directories=False)
        for path, tmp in temps:
            os.replace(tmp, path)
    except BaseException:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    return out


def atomic_write(path: Path, data: FileData, durable: bool = True) -> StoredFile:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, rename; with
    ``durable`` the file and then its directory fsynced). Returns the :class:`StoredFile`
    (path as given, size, digest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    [stored] = replace_files([(path, data)], durable)
    if durable:
        fsync_dir(path.parent)
    return stored


def make_durable(root: Path, paths: Sequence[Path]) -> None:
    """Make the files ``paths`` under ``root`` and their renames durable: one ``syncfs`` of
    root's filesystem (one journal commit for all of them) where Linux offers it, else an
    fsync of each file and directory."""
    if _SYNCFS is not None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    fsync_files(paths)


def fsync_files(paths: Sequence[Path], directories: bool = True) -> None:
    """fsync each file, then (``directories``) each directory holding them, which makes
    the renames into them durable."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in sorted({p.parent for p in paths}) if directories else ():
        fsync_dir(d)


def digest_file(path: Path) -> str:
    """XXH3-128 (hex) of the file at ``path``, read in 1 MiB chunks."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
