"""Numba parser for whitespace-separated numbers in raw bytes (ASCII PCD and PLY bodies).

One kernel walks the bytes once and writes each value straight into its column, in the
column's final dtype: integers are range-checked against that dtype, decimal floats take
the exact fast path (mantissa ≤ 2**53 and ``|exponent| ≤ 22`` → one correctly rounded
float64 multiply or divide, then rounded to the column dtype); the rare token outside it
is recorded and re-parsed by Python's ``float`` afterwards, so every value is the
correctly rounded one.

Per-column ``kinds``: ``FLOAT``, ``INT``, ``UINT``, ``PACKED_RGB`` (a PCD ``rgb`` stored as
float: an integer token is the packed uint32 as PCL writes it, a decimal token is the
float whose bits hold the colour, as Open3D reads it; the float32 column holds the packed
bits), ``SKIP`` (one token, not stored) and ``SKIP_LIST`` (a count token then that many
tokens, not stored).
"""

from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from engine._jit import inline, jit, pjit, prange
from formats.errors import FormatError

FLOAT, INT, UINT, PACKED_RGB, SKIP, SKIP_LIST = 0, 1, 2, 3, 4, 5

# kernel status codes
_OK, _BAD_TOKEN, _EOF, _SHORT_ROW, _LONG_ROW, _RANGE, _TRAILING, _BLANK_LINES = 0, 1, 2, 3, 4, 5, 6, 7

# storage codes: the view of the output memory a column is written through (unsigned
# integers are stored by their bit pattern in the signed view of their size)
_S8, _S16, _S32, _S64, _F32, _F64 = 0, 1, 2, 3, 4, 5
_VIEWS = (np.int8, np.int16, np.int32, np.int64, np.float32, np.float64)

_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)
_POW10_INT = np.array([10**k for k in range(9)], dtype=np.uint64)
_TWO53 = 1 << 53
_BIG_EXP = 100000  # exponents from here on are not accumulated further (slow path)

CHUNK_BYTES = 1 << 18
"""Target size of the line-aligned chunks :func:`parse_columns` parses in parallel."""


@inline
def _skip(buf: np.ndarray, pos: int, n: int, stop_at_newline: bool) -> int:
    """Skip blanks, and newlines unless ``stop_at_newline``."""
    while pos < n:
        ch = buf[pos]
        if ch == 32 or ch == 9 or ch == 13 or ch == 11 or ch == 12 or (ch == 10 and not stop_at_newline):
            pos += 1
        else:
            break
    return pos


@inline
def _token_end(buf: np.ndarray, pos: int, n: int) -> int:
    while pos < n:
        ch = buf[pos]
        if ch == 32 or ch == 9 or ch == 13 or ch == 10 or ch == 11 or ch == 12:
            break
        pos += 1
    return pos


@inline
def _special(buf: np.ndarray, i: int, end: int, neg: bool) -> tuple[int, float]:
    """``nan``, ``inf`` or ``infinity`` in any case at ``buf[i:end]``: (0 ok | 1 not a number, value)."""
    rest = end - i
    if rest == 3 and (buf[i] | 32) == 110 and (buf[i + 1] | 32) == 97 and (buf[i + 2] | 32) == 110:
        return 0, np.nan
    if (rest == 3 or rest == 8) and (buf[i] | 32) == 105 and (buf[i + 1] | 32) == 110 and (buf[i + 2] | 32) == 102:
        if rest == 3 or (
            (buf[i + 3] | 32) == 105 and (buf[i + 4] | 32) == 110 and (buf[i + 5] | 32) == 105
            and (buf[i + 6] | 32) == 116 and (buf[i + 7] | 32) == 121
        ):  # fmt: skip
            return 0, -np.inf if neg else np.inf
    return 1, 0.0


@inline
def _is_blank(ch: np.uint8) -> bool:
    """Space, tab, CR, VT or FF (a newline is not a blank)."""
    return ch == 32 or ch == 9 or ch == 13 or ch == 11 or ch == 12


@inline
def _load8(buf: np.ndarray, j: np.uint64) -> np.uint64:
    """``buf[j:j + 8]`` as a little-endian ``uint64`` (an unsigned index has no negative-index
    wrap, so the eight loads fuse into one; no branch, so numba's refcount pruning drops the
    increment and decrement of ``buf`` around the inlined call, outside ``prange`` bodies)."""
    return (
        np.uint64(buf[j]) | np.uint64(buf[j + np.uint64(1)]) << np.uint64(8)
        | np.uint64(buf[j + np.uint64(2)]) << np.uint64(16) | np.uint64(buf[j + np.uint64(3)]) << np.uint64(24)
        | np.uint64(buf[j + np.uint64(4)]) << np.uint64(32) | np.uint64(buf[j + np.uint64(5)]) << np.uint64(40)
        | np.uint64(buf[j + np.uint64(6)]) << np.uint64(48) | np.uint64(buf[j + np.uint64(7)]) << np.uint64(56)
    )  # fmt: skip


@inline
def _nondigits(x: np.uint64) -> np.uint64:
    """The high bit of every byte of ``x`` (bytes xor ``"0"``) that is no digit 0..9; exact up to
    the first such byte (a carry only reaches bytes above a flagged one)."""
    return ((x + np.uint64(0x7676767676767676)) | x) & np.uint64(0x8080808080808080)


@inline
def _digits_value(x: np.uint64, k: int) -> np.uint64:
    """The value of the first ``k`` (0..8) digit bytes of ``x`` (bytes xor ``"0"``, first digit
    lowest): moved to the top bytes, then pairs, quads and octets joined by three multiplies."""
    shift = np.uint64(4 * (8 - k))
    x = (x << shift) << shift  # two shifts: a shift by 64 is undefined
    x = ((x & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(2561)) >> np.uint64(8)
    x = ((x & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
    return ((x & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001)) >> np.uint64(32)


@jit
def _tail_word(buf: np.ndarray, i: int, n_buf: int) -> np.uint64:
    """The bytes ``buf[i:i + 8]`` as a little-endian ``uint64``, blanks past ``n_buf``."""
    w = np.uint64(0x2020202020202020)
    for k in range(min(8, n_buf - i)):
        w = (w & ~(np.uint64(0xFF) << np.uint64(8 * k))) | (np.uint64(buf[i + k]) << np.uint64(8 * k))
    return w


@jit
def _significant_digits(buf: np.ndarray, i: int, end: int) -> int:
    """Mantissa digits of ``buf[i:end]`` (digits and at most one point) from the first non-zero one."""
    while i < end and (buf[i] == 48 or buf[i] == 46):
        i += 1
    n_sig = 0
    while i < end:
        n_sig += buf[i] != 46
        i += 1
    return n_sig


@jit
def _scan_exponent(buf: np.ndarray, i: int, n: int) -> tuple[int, int, int]:
    """Signed exponent digits from ``buf[i]`` (after the ``e``): (0 ok | 1 no digits | 2 too
    large for the fast path, exponent, end)."""
    neg = False
    if i < n and (buf[i] == 45 or buf[i] == 43):
        neg = buf[i] == 45
        i += 1
    e = 0
    start = i
    while i < n:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            break
        if e < _BIG_EXP:
            e = e * 10 + d  # type: ignore[assignment]  # numba: all int64
        i += 1
    if i == start:
        return 1, 0, i
    return 2 if e >= _BIG_EXP else 0, -e if neg else e, i


@jit
def _scan_uint_checked(buf: np.ndarray, i: int, end: int) -> tuple[int, np.uint64]:
    """The digits ``buf[i:end]`` with an overflow check: (``_OK`` | ``_RANGE`` over 2**64 - 1, value)."""
    v = np.uint64(0)
    limit = np.uint64(1844674407370955161)  # (2**64 - 1) // 10
    for k in range(i, end):
        d = np.uint64(buf[k]) - np.uint64(48)
        if v > limit or (v == limit and d > np.uint64(5)):
            return _RANGE, np.uint64(0)
        v = v * np.uint64(10) + d
    return _OK, v


@jit
def _parse_rows(
    buf: np.ndarray,
    pos: int,
    n: int,
    row0: int,
    row1: int,
    kinds: np.ndarray,
    meta: np.ndarray,
    limits: np.ndarray,
    line_rows: bool,
    o8: np.ndarray,
    o16: np.ndarray,
    o32: np.ndarray,
    o64: np.ndarray,
    f32: np.ndarray,
    f64: np.ndarray,
    slow: np.ndarray,
    slow0: int,
    stop_at_end: bool,
) -> tuple[int, int, int, int, int]:
    """Parse rows ``row0 .. row1 - 1`` of ``len(kinds)`` tokens from ``buf[pos:n]``.

    With ``stop_at_end``, running out of data before a row starts ends the parse (status
    OK, the row reached is returned) instead of being an error.

    Column ``c`` of row ``r`` goes to element ``meta[c, 1] + r`` of the view named by the
    storage code ``meta[c, 0]`` (``o8 o16 o32 o64 f32 f64`` all view the same memory); an
    integer token's magnitude may be at most ``limits[c, 0]`` (positive) or ``limits[c,
    1]`` (negative). With ``line_rows`` each row is one line. Returns ``(status, byte
    offset, row, column, n_slow)``; floats outside the fast path are left to the caller as
    ``slow[slow0 + k] = (token start, token end, row, column)``.

    Every number token is scanned by the one piece of code below: sign, integer digits,
    fraction digits (one ``uint64`` mantissa of all digits, so a float is ``mant *
    10**(exponent - fraction digits)``), exponent. Digits are taken 8 bytes at a time
    (SWAR: no branch per digit, so no mispredicted loop exit per token), and a float of
    the common shape, digits "." digits within 16 bytes, in one step. The code is written
    out in this loop, not in helpers: numba's inlining of a helper that takes ``buf`` and
    branches costs a reference count increment and decrement per call (branch-free ones
    such as ``_load8`` get theirs pruned); hot indices are cast to ``uint64``, for which
    numba adds no negative-index wrap. The mantissa may wrap past 19 digits, which only
    matters (the slow path) when more than 19 of them are significant.
    """
    n_cols = kinds.shape[0]
    n_buf = buf.shape[0]
    n_slow = 0
    for r in range(row0, row1):
        for c in range(n_cols + 1):
            stop = line_rows and c > 0  # newlines end a row, blank lines come before one
            while pos < n and (_is_blank(buf[np.uint64(pos)]) or (buf[np.uint64(pos)] == 10 and not stop)):
                pos += 1
            if c == n_cols:  # the end of the row
                if line_rows and pos < n and buf[np.uint64(pos)] != 10:
                    return _LONG_ROW, pos, r, n_cols, n_slow
                break
            if pos >= n:
                return _OK if stop_at_end and c == 0 else _EOF, pos, r, c, n_slow
            if buf[np.uint64(pos)] == 10:
                return _SHORT_ROW, pos, r, c, n_slow
            kind = kinds[np.uint64(c)]
            if kind == SKIP:
                pos = _token_end(buf, pos, n)
                continue
            # the number token: the integer digits, then (after a point) the fraction digits
            i = pos
            neg = buf[np.uint64(i)] == 45
            signed = neg or buf[np.uint64(i)] == 43
            i += signed
            start = i
            mant = np.uint64(0)
            n_int = -1
            n_frac = -1  # -1: no point
            if kind == FLOAT and i + 16 <= n_buf:
                # the common float, digits "." digits within 16 bytes: the point taken out of
                # the two words, then every digit converted at once, without a loop
                x = _load8(buf, np.uint64(i)) ^ np.uint64(0x3030303030303030)
                x2 = _load8(buf, np.uint64(i + 8)) ^ np.uint64(0x3030303030303030)
                nd = _nondigits(x)
                k = np.int64(trailing_zeros(nd) >> np.uint64(3))
                if k < 8 and (x >> np.uint64(8 * k)) & np.uint64(0xFF) == np.uint64(46 ^ 48):
                    low = (np.uint64(1) << np.uint64(8 * k)) - np.uint64(1)  # the bytes before the point
                    nd2 = _nondigits(x2)
                    nd_lo = (nd & low) | (((nd >> np.uint64(8)) | (nd2 << np.uint64(56))) & ~low)
                    nd_hi = (nd2 >> np.uint64(8)) | np.uint64(0x8000000000000000)  # past the window: a stop
                    n_all = np.int64(trailing_zeros(nd_lo) >> np.uint64(3))
                    if n_all == 8:
                        n_all += np.int64(trailing_zeros(nd_hi) >> np.uint64(3))
                    if n_all < 15 and start + n_all + 1 <= n:
                        lo = (x & low) | (((x >> np.uint64(8)) | (x2 << np.uint64(56))) & ~low)
                        n_hi = max(n_all - 8, 0)
                        scale = _POW10_INT[np.uint64(n_hi)]  # type: ignore[arg-type]  # numba: all int64
                        high = _digits_value(lo, min(n_all, 8)) * scale
                        mant = high + _digits_value(x2 >> np.uint64(8), n_hi)
                        n_int, n_frac = k, n_all - k  # type: ignore[assignment]  # numba: all int64
                        i = start + n_all + 1
            if n_int < 0:  # any other token: each part's digits, 8 bytes at a time
                n_run = 0  # digits of the current part so far
                while True:
                    if i + 8 <= n_buf:
                        w = _load8(buf, np.uint64(i))
                    else:
                        w = _tail_word(buf, i, n_buf)
                    x = w ^ np.uint64(0x3030303030303030)  # digit bytes become 0..9
                    k = min(np.int64(trailing_zeros(_nondigits(x)) >> np.uint64(3)), n - i)
                    mant = mant * _POW10_INT[np.uint64(k)] + _digits_value(x, k)
                    n_run += k  # type: ignore[assignment]  # numba: all int64
                    i += k
                    if k == 8:
                        continue
                    if n_int < 0:
                        n_int, n_run = n_run, 0
                        if i < n and buf[np.uint64(i)] == 46:  # .
                            i += 1
                            continue
                    else:
                        n_frac = n_run
                    break
            exp_st, exp10 = _OK, 0
            if i < n and (buf[np.uint64(i)] | 32) == 101:  # e E
                exp_st, exp10, i = _scan_exponent(buf, i + 1, n)
            ends = i >= n or _is_blank(buf[np.uint64(i)]) or buf[np.uint64(i)] == 10
            code = meta[np.uint64(c), np.uint64(0)]
            at = np.uint64(meta[np.uint64(c), np.uint64(1)] + r)
            if kind != FLOAT:  # an integer token: INT, UINT, SKIP_LIST (count) or PACKED_RGB (packed bits)
                integer = ends and n_int > 0 and n_frac < 0 and i == start + n_int
                if kind == PACKED_RGB or kind == SKIP_LIST:
                    integer = integer and not signed
                if kind != PACKED_RGB and (not integer or (neg and kind == UINT)):
                    return _BAD_TOKEN, pos, r, c, n_slow
                st = _OK
                if integer and n_int > 19:  # leading zeros, or an overflow
                    st, mant = _scan_uint_checked(buf, start, i)
                if kind == SKIP_LIST:
                    if st != _OK:
                        return _BAD_TOKEN, pos, r, c, n_slow
                    if mant > np.uint64(n - i):  # more items than bytes left
                        return _EOF, n, r, c, n_slow
                    for _ in range(np.int64(mant)):
                        i = _skip(buf, i, n, line_rows)
                        if i >= n:
                            return _EOF, i, r, c, n_slow
                        if buf[np.uint64(i)] == 10:
                            return _SHORT_ROW, i, r, c, n_slow
                        i = _token_end(buf, i, n)
                    pos = i
                    continue
                if kind != PACKED_RGB:
                    if st != _OK or mant > limits[np.uint64(c), np.uint64(neg)]:
                        return _RANGE, pos, r, c, n_slow
                    x = -np.int64(mant - np.uint64(1)) - 1 if neg else np.int64(mant)
                    if code == _S64:
                        o64[at] = x
                    elif code == _S32:
                        o32[at] = np.int32(x)
                    elif code == _S16:
                        o16[at] = np.int16(x)
                    else:
                        o8[at] = np.int8(x)
                    pos = i
                    continue
                if integer and st == _OK and mant <= np.uint64(0xFFFFFFFF):
                    o32[at] = np.int32(np.int64(mant))
                    pos = i
                    continue
            # a float: FLOAT, or a PACKED_RGB token that is no uint32
            n_digits = n_int + max(n_frac, 0)
            if n_digits == 0:  # nan, inf, infinity or not a number
                end = _token_end(buf, i, n)
                if n_frac >= 0 or exp_st != _OK or i > start:
                    return _BAD_TOKEN, pos, r, c, n_slow
                st, v = _special(buf, start, end, neg)
                if st != 0:
                    return _BAD_TOKEN, pos, r, c, n_slow
                i = end
            else:
                if exp_st == 1 or not ends:
                    return _BAD_TOKEN, pos, r, c, n_slow
                exp10 -= max(n_frac, 0)
                if (
                    exp_st == 2
                    or (n_digits > 19 and _significant_digits(buf, start, i) > 19)
                    or (mant > np.uint64(_TWO53) or exp10 > 22 or exp10 < -22) and mant != np.uint64(0)
                ):
                    k = slow0 + n_slow  # type: ignore[assignment]  # numba: all int64
                    slow[k, 0] = pos
                    slow[k, 1] = i
                    slow[k, 2] = r
                    slow[k, 3] = c
                    n_slow += 1
                    pos = i
                    continue
                v = np.float64(np.int64(mant))
                if exp10 >= 0:
                    v = v * _POW10[np.uint64(min(exp10, 22))]
                else:
                    v = v / _POW10[np.uint64(min(-exp10, 22))]
                v = -v if neg else v
            if code == _F32:
                f32[at] = np.float32(v)
            else:
                f64[at] = v
            pos = i
    return _OK, pos, row1, 0, n_slow


@jit
def _parse_table(
    buf: np.ndarray,
    pos: int,
    n_rows: int,
    kinds: np.ndarray,
    meta: np.ndarray,
    limits: np.ndarray,
    line_rows: bool,
    check_end: bool,
    o8: np.ndarray,
    o16: np.ndarray,
    o32: np.ndarray,
    o64: np.ndarray,
    f32: np.ndarray,
    f64: np.ndarray,
    slow: np.ndarray,
) -> tuple[int, int, int, int, int]:
    """Serial parse of ``n_rows`` rows from ``buf[pos:]`` (see :func:`_parse_rows`); with
    ``check_end`` only blanks may follow the last row."""
    n = buf.shape[0]
    status, pos, row, col, n_slow = _parse_rows(
        buf, pos, n, 0, n_rows, kinds, meta, limits, line_rows, o8, o16, o32, o64, f32, f64, slow, 0, False
    )
    if status == _OK and check_end:
        pos = _skip(buf, pos, n, False)
        if pos < n:
            return _TRAILING, pos, n_rows, 0, n_slow
    return status, pos, row, col, n_slow


@jit
def _count_newlines(buf: np.ndarray, a: int, b: int) -> np.int64:
    """Newlines in ``buf[a:b]``, 8 bytes at a time (an exact zero-byte test of ``w ^ "\\n" * 8``).

    A function of its own, not the body of a ``prange`` loop: there, numba keeps the
    reference count increment and decrement of the inlined ``_load8`` inside the loop.
    """
    count = np.uint64(0)
    i = a
    while i + 8 <= b:
        t = _load8(buf, np.uint64(i)) ^ np.uint64(0x0A0A0A0A0A0A0A0A)
        seven = np.uint64(0x7F7F7F7F7F7F7F7F)
        z = ~(((t & seven) + seven) | t) & np.uint64(0x8080808080808080)
        count += ((z >> np.uint64(7)) * np.uint64(0x0101010101010101)) >> np.uint64(56)
        i += 8
    for i in range(i, b):
        count += np.uint64(buf[i] == 10)
    return np.int64(count)


@pjit
def _line_chunks(buf: np.ndarray, start: int, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``buf[start:]`` just after newlines into ``n_chunks`` (some may be empty):
    ``(bounds (n_chunks + 1,), first line of each chunk (n_chunks + 1,))``; the last
    chunk's line may lack its newline."""
    n = buf.shape[0]
    bounds = np.empty(n_chunks + 1, dtype=np.int64)
    bounds[0] = start
    bounds[n_chunks] = n
    for k in range(1, n_chunks):
        j = max(start + (n - start) * k // n_chunks, bounds[k - 1])
        while j < n and buf[j] != 10:
            j += 1
        bounds[k] = min(j + 1, n)
    line_at = np.zeros(n_chunks + 1, dtype=np.int64)
    for k in prange(n_chunks):
        a, b = bounds[k], bounds[k + 1]
        line_at[k + 1] = _count_newlines(buf, a, b) + (b > a and buf[b - 1] != 10)
    for k in range(n_chunks):
        line_at[k + 1] += line_at[k]
    return bounds, line_at


@pjit
def _parse_lines(
    buf: np.ndarray,
    bounds: np.ndarray,
    row_at: np.ndarray,
    n_rows: int,
    kinds: np.ndarray,
    meta: np.ndarray,
    limits: np.ndarray,
    o8: np.ndarray,
    o16: np.ndarray,
    o32: np.ndarray,
    o64: np.ndarray,
    f32: np.ndarray,
    f64: np.ndarray,
    slow: np.ndarray,
) -> tuple[int, int, int, int, int]:
    """Parallel parse of one row per line from the chunks ``buf[bounds[k]:bounds[k + 1]]``.

    Chunk ``k`` holds lines ``row_at[k] .. row_at[k + 1] - 1`` and writes its rows from
    ``row_at[k]``; only blanks may follow row ``n_rows - 1``. Every chunk records its first
    error and the earliest chunk's is returned, so (status, offset, row, column) is what
    :func:`_parse_table` gives, provided no chunk before it held a blank line (status
    ``_BLANK_LINES`` says otherwise: the row offsets were wrong and the caller parses
    serially). ``slow`` entries are compacted to the front; their count is the last value.
    """
    n_float = 0
    for c in range(kinds.shape[0]):
        if kinds[c] == FLOAT or kinds[c] == PACKED_RGB:
            n_float += 1
    n_chunks = bounds.shape[0] - 1
    result = np.zeros((n_chunks, 5), dtype=np.int64)  # status, offset, row reached, column, n_slow
    for k in prange(n_chunks):
        r0 = row_at[k]
        a, b = bounds[k], bounds[k + 1]
        status, pos, row, col, n_slow = _parse_rows(
            buf, a, b, r0, max(r0, min(row_at[k + 1], n_rows)), kinds, meta, limits, True,
            o8, o16, o32, o64, f32, f64, slow, r0 * n_float, True,
        )  # fmt: skip
        if status == _OK:
            pos = _skip(buf, pos, b, False)
            if pos < b:  # a row beyond the declared ones (a chunk has no more rows than lines)
                status, row = _TRAILING, n_rows
        result[k, 0] = status
        result[k, 1] = pos
        result[k, 2] = row
        result[k, 3] = col
        result[k, 4] = n_slow
    n_slow = 0
    rows = 0  # rows parsed before chunk k
    for k in range(n_chunks):
        if row_at[k] != rows and (result[k, 0] != _OK or result[k, 2] > row_at[k]):
            return _BLANK_LINES, 0, 0, 0, 0
        if result[k, 0] != _OK:
            return result[k, 0], result[k, 1], result[k, 2], result[k, 3], n_slow
        s0 = row_at[k] * n_float
        for j in range(result[k, 4]):
            slow[n_slow] = slow[s0 + j]
            n_slow += 1
        rows += result[k, 2] - row_at[k]
    if rows < n_rows:
        return _EOF, buf.shape[0], rows, 0, n_slow
    return _OK, buf.shape[0], n_rows, 0, n_slow


def _layout(
    kinds: np.ndarray, dtypes: list, n_rows: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.dtype]]]:
    """Storage of every stored column in one block of memory: ``(meta (C, 2) int64: storage
    code, first element; limits (C, 2) uint64: largest positive, negative integer
    magnitude; (byte offset, native dtype) per stored column)``. Columns start 8-aligned."""
    meta = np.zeros((len(kinds), 2), dtype=np.int64)
    limits = np.zeros((len(kinds), 2), dtype=np.uint64)
    where: list[tuple[int, np.dtype]] = []
    offset = 0
    for c, (kind, dt) in enumerate(zip(kinds, dtypes)):
        if kind == SKIP or kind == SKIP_LIST:
            continue
        dt = np.dtype(dt).newbyteorder("=")
        if dt.kind == "f":
            code = _F32 if dt.itemsize == 4 else _F64
        else:
            code = (_S8, _S16, _S32, _S64)[dt.itemsize.bit_length() - 1]
        meta[c] = code, offset // dt.itemsize
        if dt.kind in "iu":
            info = np.iinfo(dt)
            limits[c] = info.max, -info.min
        where.append((offset, dt))
        offset += -(-n_rows * dt.itemsize // 8) * 8
    return meta, limits, where


def parse_columns(
    path: str,
    buf: np.ndarray,
    start: int,
    n_rows: int,
    kinds: np.ndarray,
    dtypes: list,
    names: list[str],
    line_rows: bool,
    check_end: bool,
) -> tuple[list[np.ndarray], int]:
    """Parse ``n_rows`` rows of tokens; returns ``(one (n_rows,) array per stored column, end offset)``.

    Column ``c`` has kind ``kinds[c]`` and, unless skipped, dtype ``dtypes[c]`` (``FLOAT``:
    float32/float64, ``INT``/``UINT``: a signed/unsigned integer dtype whose range the
    values must fit, ``PACKED_RGB``: float32); stored columns are those whose kind is not a
    skip, in order. ``names[c]`` names column ``c`` in errors. One row per line with nothing
    after the last (``line_rows`` and ``check_end``, as PCD) is parsed in parallel, in
    chunks of about :data:`CHUNK_BYTES`. Bad input raises ``FormatError`` with the byte
    offset, the row and the field that was expected. Nothing is sized by ``n_rows`` beyond
    the rows the bytes left can hold (``2 * len(kinds) - 1`` bytes a row at least): a larger
    count is parsed up to one row more, which the data cannot hold, so it ends in the
    precise error of a short file. No columns: rows hold no tokens and nothing is read.
    """
    kinds = np.ascontiguousarray(kinds, dtype=np.int64)
    if not len(kinds):
        return [], start
    declared = n_rows
    n_rows = min(n_rows, (len(buf) - start + 1) // (2 * len(kinds)) + 1)
    meta, limits, where = _layout(kinds, dtypes, n_rows)
    mem = np.empty(max(8, sum(-(-n_rows * dt.itemsize // 8) * 8 for _, dt in where)), dtype=np.uint8)
    views = [mem.view(v) for v in _VIEWS]
    n_float = int(((kinds == FLOAT) | (kinds == PACKED_RGB)).sum())
    slow = np.empty((n_rows * n_float, 4), dtype=np.int64)  # pages are only touched where slow tokens are
    status = _BLANK_LINES
    if line_rows and check_end:
        bounds, row_at = _line_chunks(buf, start, max(1, (len(buf) - start) // CHUNK_BYTES))
        status, pos, row, col, n_slow = _parse_lines(buf, bounds, row_at, n_rows, kinds, meta, limits, *views, slow)
    if status == _BLANK_LINES:
        status, pos, row, col, n_slow = _parse_table(
            buf, start, n_rows, kinds, meta, limits, line_rows, check_end, *views, slow
        )
    if status != _OK:
        field = names[col] if col < len(names) else None
        dtype = np.dtype(dtypes[col]) if col < len(dtypes) and dtypes[col] is not None else None
        what = {
            _BAD_TOKEN: f"a number for field {field!r} (row {row})",
            _EOF: f"{declared} rows of {len(kinds)} values; the data ends in row {row} at field {field!r}",
            _SHORT_ROW: f"a value for field {field!r} before the end of line (row {row})",
            _LONG_ROW: f"the end of line after {len(kinds)} values (row {row})",
            _RANGE: f"an integer for field {field!r} within the {dtype} range (row {row})",
            _TRAILING: f"no data after the {declared} declared rows",
        }[status]
        if status in (_BAD_TOKEN, _RANGE):
            token = bytes(buf[pos : pos + 24]).split(None, 1)[0] if pos < len(buf) else b""
            what += f", found {token!r}"
        raise FormatError(path, int(pos), what)
    columns = [mem[o : o + n_rows * dt.itemsize].view(dt) for o, dt in where]
    out_col = np.cumsum((kinds != SKIP) & (kinds != SKIP_LIST)) - 1
    with np.errstate(over="ignore"):  # beyond the float32 range is inf, as in the kernel
        for s, e, r, c in slow[:n_slow]:
            columns[out_col[c]][r] = float(bytes(buf[s:e]))  # a PACKED_RGB float32 holds the value's bits
    return columns, int(pos)


def _warmup() -> None:
    buf = np.frombuffer(b"1 -2 3.5 nan 7 1e300 4 9 9\n2 3 4 5 0.5 1 0 \n", dtype=np.uint8)
    kinds = np.array([INT, UINT, FLOAT, FLOAT, PACKED_RGB, FLOAT, SKIP_LIST], dtype=np.int64)
    dtypes = [np.int16, np.uint8, np.float32, np.float64, np.float32, np.float32, None]
    names = ["a", "b", "c", "d", "e", "f", "g"]
    try:
        parse_columns("<warmup>", buf, 0, 2, kinds, dtypes, names, True, True)
    except FormatError:
        pass
    parse_columns("<warmup>", np.frombuffer(b"1 2 3", dtype=np.uint8), 0, 1, np.array([FLOAT] * 3), [np.float64] * 3,
                  names, False, False)
