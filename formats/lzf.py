"""LZF (liblzf) decompression and compression in numba, as PCD ``binary_compressed`` uses.

Stream format: a control byte ``c``; ``c < 32`` starts a literal run of ``c + 1`` bytes,
otherwise a back reference of length ``(c >> 5) + 2`` (a length of 7 reads one more byte
that is added) at distance ``((c & 31) << 8) + next byte + 1`` behind the output cursor.
The decoder checks every read and write against the buffers' ends, so corrupt input
yields an error code and the offset where it was found, never an out-of-bounds access.
"""

from __future__ import annotations

import numpy as np

from engine._jit import jit

# decoder status codes
OK = 0
TRUNCATED_INPUT = 1  # a literal run or back reference needs bytes past the input's end
OUTPUT_OVERFLOW = 2  # the stream would write past the expected decompressed size
BAD_REFERENCE = 3  # a back reference points before the start of the output
SHORT_OUTPUT = 4  # the stream ended before the expected decompressed size was produced
TOO_LARGE = 5  # no stream of the input's length decodes to the expected size (nothing allocated)

MESSAGES = {
    TRUNCATED_INPUT: "more LZF input (the stream ends inside a literal run or back reference)",
    OUTPUT_OVERFLOW: "an LZF stream no longer than the stated uncompressed size",
    BAD_REFERENCE: "an LZF back reference within the bytes decoded so far",
    SHORT_OUTPUT: "an LZF stream that fills the stated uncompressed size",
    TOO_LARGE: "an uncompressed size that LZF can reach from the compressed bytes (at most 88 times as many)",
}

_HLOG = 14
_MAX_LIT = 32
_MAX_OFF = 1 << 13
_MAX_REF = (1 << 8) + (1 << 3)


@jit
def _decompress(src: np.ndarray, dst: np.ndarray) -> tuple[int, np.uint64, np.uint64]:
    """Decode ``src`` (uint8) into ``dst`` (uint8, exact expected size).

    Returns ``(status, input offset, output offset)``; status ``OK`` means ``dst`` is exactly
    filled. Offsets are unsigned so that numba emits no negative-index wraparound code.
    """
    one = np.uint64(1)
    ip = np.uint64(0)
    op = np.uint64(0)
    n_in = np.uint64(src.shape[0])
    n_out = np.uint64(dst.shape[0])
    while ip < n_in:
        start = ip
        ctrl = np.uint64(src[ip])
        ip += one
        if ctrl < np.uint64(32):
            run = ctrl + one
            if ip + run > n_in:
                return TRUNCATED_INPUT, start, op
            if op + run > n_out:
                return OUTPUT_OVERFLOW, start, op
            for k in range(run):
                dst[op + k] = src[ip + k]
            ip += run
            op += run
        else:
            length = ctrl >> np.uint64(5)
            if length == np.uint64(7):
                if ip >= n_in:
                    return TRUNCATED_INPUT, start, op
                length += np.uint64(src[ip])
                ip += one
            if ip >= n_in:
                return TRUNCATED_INPUT, start, op
            back = ((ctrl & np.uint64(0x1F)) << np.uint64(8)) + np.uint64(src[ip]) + one
            ip += one
            length += np.uint64(2)
            if back > op:
                return BAD_REFERENCE, start, op
            if op + length > n_out:
                return OUTPUT_OVERFLOW, start, op
            ref = op - back
            for k in range(length):  # byte by byte: the reference may overlap the output
                dst[op + k] = dst[ref + k]
            op += length
    if op != n_out:
        return SHORT_OUTPUT, n_in, op
    return OK, n_in, op


@jit
def _compress(src: np.ndarray, dst: np.ndarray) -> int:
    """Encode ``src`` (uint8) into ``dst`` (uint8, at least ``max_compressed_size``); returns bytes written."""
    n = src.shape[0]
    table = np.full(1 << _HLOG, -1, dtype=np.int64)
    ip = 0
    op = 1  # dst[lit_start] holds the pending literal run's control byte
    lit_start = 0
    lit = 0
    while ip + 2 < n:
        h = ((np.int64(src[ip]) << 16) | (np.int64(src[ip + 1]) << 8) | np.int64(src[ip + 2])) * 2654435761
        h = (h >> 8) & ((1 << _HLOG) - 1)
        ref = table[h]
        table[h] = ip
        off = ip - ref - 1
        if (
            ref >= 0
            and off < _MAX_OFF
            and src[ref] == src[ip]
            and src[ref + 1] == src[ip + 1]
            and src[ref + 2] == src[ip + 2]
        ):
            max_len = min(_MAX_REF, n - ip)
            length = 3
            while length < max_len and src[ref + length] == src[ip + length]:
                length += 1
            # close the literal run
            if lit > 0:
                dst[lit_start] = lit - 1
            else:
                op -= 1  # no literals: reuse the reserved control byte slot
            code = length - 2
            if code < 7:
                dst[op] = (off >> 8) + (code << 5)
                op += 1
            else:
                dst[op] = (off >> 8) + (7 << 5)
                dst[op + 1] = code - 7
                op += 2
            dst[op] = off & 0xFF
            op += 1
            ip += length
            lit_start = op
            lit = 0
            op += 1
        else:
            dst[op] = src[ip]
            op += 1
            ip += 1
            lit += 1
            if lit == _MAX_LIT:
                dst[lit_start] = _MAX_LIT - 1
                lit_start = op
                lit = 0
                op += 1
    while ip < n:
        dst[op] = src[ip]
        op += 1
        ip += 1
        lit += 1
        if lit == _MAX_LIT:
            dst[lit_start] = _MAX_LIT - 1
            lit_start = op
            lit = 0
            op += 1
    if lit > 0:
        dst[lit_start] = lit - 1
        return op
    return op - 1  # drop the reserved, unused control byte


def max_compressed_size(n: int) -> int:
    """Worst-case LZF output size for ``n`` input bytes (one control byte per 32 literals)."""
    return n + n // _MAX_LIT + 2


def max_decompressed_size(n: int) -> int:
    """Largest output of ``n`` LZF input bytes (an upper bound): 3-byte back references of 264
    bytes each, and a 2-byte one of 8 bytes for the remainder."""
    return n // 3 * _MAX_REF + (8 if n % 3 == 2 else 0)


def decompress(src: bytes | np.ndarray, size: int) -> tuple[np.ndarray, int, int, int]:
    """Decode an LZF stream expected to produce exactly ``size`` bytes.

    Returns ``(uint8 array of size bytes, status, input offset, output offset)``: status is
    ``OK`` or a key of ``MESSAGES``, the offsets say where the problem was found. Callers
    turn a bad status into a ``FormatError``. A ``size`` beyond :func:`max_decompressed_size`
    of the input is ``TOO_LARGE`` with an empty array: nothing is sized by it.
    """
    buf = np.frombuffer(src, dtype=np.uint8) if isinstance(src, (bytes, bytearray, memoryview)) else src
    if size > max_decompressed_size(len(buf)):
        return np.empty(0, dtype=np.uint8), TOO_LARGE, 0, 0
    dst = np.empty(size, dtype=np.uint8)
    status, in_offset, out_offset = _decompress(np.ascontiguousarray(buf, dtype=np.uint8), dst)
    return dst, int(status), int(in_offset), int(out_offset)


def compress(src: bytes | np.ndarray) -> bytes:
    """LZF-encode ``src``; always succeeds (incompressible data grows by at most 1/32)."""
    raw = np.frombuffer(src, dtype=np.uint8) if isinstance(src, bytes) else src.view(np.uint8).ravel()
    buf = np.ascontiguousarray(raw)
    dst = np.empty(max_compressed_size(len(buf)), dtype=np.uint8)
    n = _compress(buf, dst)
    return dst[:n].tobytes()


def _warmup() -> None:
    data = np.frombuffer(b"abcabcabcabcabcabc0123456789" * 3, dtype=np.uint8)
    packed = compress(data)
    decompress(np.frombuffer(packed, dtype=np.uint8), len(data))
    decompress(packed, len(data))
    decompress(np.frombuffer(packed, dtype=np.uint8).copy(), len(data))
    compress(data.copy())
