"""Numba parser for whitespace-separated numbers in raw bytes (ASCII PCD and PLY bodies).

One kernel walks the bytes once and writes each value straight into an ``(N, C) int64``
table whose memory is also viewed as ``float64``: integer columns store their value
(unsigned ones their bit pattern), float columns their float64. Decimal floats take the
exact fast path (mantissa ≤ 2**53 and ``|exponent| ≤ 22`` → one correctly rounded
multiply or divide); the rare token outside it is recorded and re-parsed by Python's
``float`` afterwards, so every value is the correctly rounded one.

Per-column ``kinds``: ``FLOAT``, ``INT``, ``UINT``, ``PACKED_RGB`` (a PCD ``rgb`` stored as
float: an integer token is the packed uint32 as PCL writes it, a decimal token is the
float whose bits hold the colour, as Open3D reads it; the uint32 is stored), ``SKIP`` (one
token, not stored) and ``SKIP_LIST`` (a count token then that many tokens, not stored).
"""

from __future__ import annotations

import numpy as np

from engine._jit import inline, jit, pjit, prange
from formats.errors import FormatError

FLOAT, INT, UINT, PACKED_RGB, SKIP, SKIP_LIST = 0, 1, 2, 3, 4, 5

# kernel status codes
_OK, _BAD_TOKEN, _EOF, _SHORT_ROW, _LONG_ROW, _OVERFLOW, _TRAILING, _BLANK_LINES = 0, 1, 2, 3, 4, 5, 6, 7

_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)
_TWO53 = 1 << 53

CHUNK_BYTES = 1 << 18
"""Target size of the line-aligned chunks :func:`parse_table` parses in parallel."""


@inline
def _at_end(buf: np.ndarray, i: int, n: int) -> bool:
    """True where a token must end: end of data, a blank (space, tab, CR, VT, FF) or a newline."""
    if i >= n:
        return True
    ch = buf[i]
    return ch == 32 or ch == 9 or ch == 13 or ch == 10 or ch == 11 or ch == 12


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
def _scan_float(buf: np.ndarray, pos: int, n: int) -> tuple[int, float, int]:
    """One pass over a decimal token: (0 ok | 1 not a number | 2 valid, outside the fast path; value; end).

    Digits and the point are read in one loop; ``mant`` gathers every digit (it may wrap
    once more than 19 significant digits came, which sends the token to the slow path),
    so the value is ``mant * 10**(exponent - digits after the point)``.
    """
    i = pos
    neg = False
    if buf[i] == 45 or buf[i] == 43:  # - +
        neg = buf[i] == 45
        i += 1
    mant = np.uint64(0)
    n_sig = 0  # digits from the first non-zero one
    n_digits = 0
    dot = -1  # digits before the point
    while i < n:
        d = np.uint64(buf[i]) - np.uint64(48)
        if d < np.uint64(10):
            mant = mant * np.uint64(10) + d
            n_sig += mant != np.uint64(0)
            n_digits += 1
        elif buf[i] == 46 and dot < 0:  # .
            dot = n_digits
        else:
            break
        i += 1
    if n_digits == 0:
        end = _token_end(buf, i, n)
        if dot >= 0:
            return 1, 0.0, end
        st, v = _special(buf, i, end, neg)
        return st, v, end
    exp10 = 0 if dot < 0 else dot - n_digits
    if i < n and (buf[i] == 101 or buf[i] == 69):  # e E
        i += 1
        eneg = False
        if i < n and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        e = 0
        n_exp = 0
        while i < n:
            d = np.int64(buf[i]) - 48
            if d < 0 or d > 9:
                break
            if e < 100000:
                e = e * 10 + d
            n_exp += 1
            i += 1
        if n_exp == 0:
            return 1, 0.0, i
        exp10 += -e if eneg else e
    if not _at_end(buf, i, n):
        return 1, 0.0, i
    if n_sig == 0:
        return 0, -0.0 if neg else 0.0, i
    if n_sig > 19 or mant > np.uint64(_TWO53) or exp10 > 22 or exp10 < -22:
        return 2, 0.0, i
    v = np.float64(mant)
    if exp10 >= 0:
        v = v * _POW10[exp10]
    else:
        v = v / _POW10[-exp10]
    return 0, -v if neg else v, i


@inline
def _scan_uint(buf: np.ndarray, pos: int, n: int) -> tuple[int, np.uint64, int]:
    """Digits only: (0 ok | 1 not an integer | 5 overflow, value, end)."""
    v = np.uint64(0)
    limit = np.uint64(1844674407370955161)  # (2**64 - 1) // 10
    i = pos
    while i < n:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            break
        if v > limit or (v == limit and d > 5):
            return 5, np.uint64(0), i
        v = v * np.uint64(10) + np.uint64(d)
        i += 1
    if i == pos or not _at_end(buf, i, n):
        return 1, np.uint64(0), i
    return 0, v, i


@jit
def _parse_rows(
    buf: np.ndarray,
    pos: int,
    n: int,
    row0: int,
    row1: int,
    kinds: np.ndarray,
    out_col: np.ndarray,
    line_rows: bool,
    out_i: np.ndarray,
    out_f: np.ndarray,
    slow: np.ndarray,
    slow0: int,
    stop_at_end: bool,
) -> tuple[int, int, int, int, int]:
    """Parse rows ``row0 .. row1 - 1`` of ``len(kinds)`` tokens from ``buf[pos:n]``.

    With ``stop_at_end``, running out of data before a row starts ends the parse (status
    OK, the row reached is returned) instead of being an error.

    ``out_i`` and ``out_f`` alias the same ``(n_out, n_rows)`` memory (column ``oc`` of row
    ``r`` at ``[oc, r]``). With ``line_rows`` each row is one line. Returns ``(status, byte
    offset, row, column, n_slow)``; floats outside the fast path are left to the caller as
    ``slow[slow0 + k] = (token start, token end, row, column)``.
    """
    n_cols = kinds.shape[0]
    scratch = np.empty(1, dtype=np.float32)
    scratch_bits = scratch.view(np.uint32)
    n_slow = 0
    for r in range(row0, row1):
        for c in range(n_cols):
            # the blank skip written out here (not _skip): this loop is the hot path
            stop = line_rows and c > 0
            while pos < n:
                ch = buf[pos]
                if ch == 32 or ch == 9 or ch == 13 or ch == 11 or ch == 12 or (ch == 10 and not stop):
                    pos += 1
                else:
                    break
            if pos >= n:
                return _OK if stop_at_end and c == 0 else _EOF, pos, r, c, n_slow
            if buf[pos] == 10:
                return _SHORT_ROW, pos, r, c, n_slow
            kind = kinds[c]
            oc = out_col[c]
            if kind == FLOAT or kind == PACKED_RGB:
                if kind == PACKED_RGB:
                    st, u, end = _scan_uint(buf, pos, n)
                    if st == 0 and u <= np.uint64(0xFFFFFFFF):
                        out_i[oc, r] = np.int64(u)
                        pos = end
                        continue
                st, v, end = _scan_float(buf, pos, n)
                if st == 1:
                    return _BAD_TOKEN, pos, r, c, n_slow
                if st == 2:
                    k = slow0 + n_slow
                    slow[k, 0] = pos
                    slow[k, 1] = end
                    slow[k, 2] = r
                    slow[k, 3] = c
                    n_slow += 1
                elif kind == FLOAT:
                    out_f[oc, r] = v
                else:
                    scratch[0] = np.float32(v)
                    out_i[oc, r] = np.int64(scratch_bits[0])
            elif kind == INT or kind == UINT:
                neg = buf[pos] == 45
                sign = 1 if (neg or buf[pos] == 43) else 0
                if neg and kind == UINT:
                    return _BAD_TOKEN, pos, r, c, n_slow
                st, u, end = _scan_uint(buf, pos + sign, n)
                if st == 1:
                    return _BAD_TOKEN, pos, r, c, n_slow
                if st == 5 or (kind == INT and u > (np.uint64(1) << np.uint64(63)) - np.uint64(0 if neg else 1)):
                    return _OVERFLOW, pos, r, c, n_slow
                if neg:
                    out_i[oc, r] = -np.int64(u - np.uint64(1)) - 1
                else:
                    out_i[oc, r] = np.int64(u)
            elif kind == SKIP:
                end = _token_end(buf, pos, n)
            else:  # SKIP_LIST
                st, u, end = _scan_uint(buf, pos, n)
                if st != 0:
                    return _BAD_TOKEN, pos, r, c, n_slow
                for _ in range(np.int64(u)):
                    end = _skip(buf, end, n, line_rows)
                    if end >= n:
                        return _EOF, end, r, c, n_slow
                    if buf[end] == 10:
                        return _SHORT_ROW, end, r, c, n_slow
                    end = _token_end(buf, end, n)
            pos = end
        if line_rows:
            pos = _skip(buf, pos, n, True)
            if pos < n and buf[pos] != 10:
                return _LONG_ROW, pos, r, n_cols, n_slow
    return _OK, pos, row1, 0, n_slow


@jit
def _parse_table(
    buf: np.ndarray,
    pos: int,
    n_rows: int,
    kinds: np.ndarray,
    out_col: np.ndarray,
    line_rows: bool,
    check_end: bool,
    out_i: np.ndarray,
    out_f: np.ndarray,
    slow: np.ndarray,
) -> tuple[int, int, int, int, int]:
    """Serial parse of ``n_rows`` rows from ``buf[pos:]`` (see :func:`_parse_rows`); with
    ``check_end`` only blanks may follow the last row."""
    n = buf.shape[0]
    status, pos, row, col, n_slow = _parse_rows(buf, pos, n, 0, n_rows, kinds, out_col, line_rows, out_i, out_f, slow, 0, False)
    if status == _OK and check_end:
        pos = _skip(buf, pos, n, False)
        if pos < n:
            return _TRAILING, pos, n_rows, 0, n_slow
    return status, pos, row, col, n_slow


@jit
def _chunk_bounds(buf: np.ndarray, start: int, n_chunks: int) -> np.ndarray:
    """``n_chunks + 1`` offsets splitting ``buf[start:]`` just after newlines (empty chunks allowed)."""
    n = buf.shape[0]
    bounds = np.empty(n_chunks + 1, dtype=np.int64)
    bounds[0] = start
    bounds[n_chunks] = n
    for k in range(1, n_chunks):
        j = max(start + (n - start) * k // n_chunks, bounds[k - 1])
        while j < n and buf[j] != 10:
            j += 1
        bounds[k] = min(j + 1, n)
    return bounds


@pjit
def _parse_lines(
    buf: np.ndarray,
    bounds: np.ndarray,
    row_at: np.ndarray,
    n_rows: int,
    kinds: np.ndarray,
    out_col: np.ndarray,
    out_i: np.ndarray,
    out_f: np.ndarray,
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
            buf, a, b, r0, max(r0, min(row_at[k + 1], n_rows)), kinds, out_col, True, out_i, out_f, slow, r0 * n_float, True
        )
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


def parse_table(
    path: str,
    buf: np.ndarray,
    start: int,
    n_rows: int,
    kinds: np.ndarray,
    names: list[str],
    line_rows: bool,
    check_end: bool,
) -> tuple[np.ndarray, int]:
    """Parse ``n_rows`` rows of tokens; returns ``(int64 table (n_rows, n_stored), end offset)``.

    ``names[c]`` names column ``c`` in errors. Stored columns are those whose kind is not a
    skip, in order; read a ``FLOAT`` column through ``table.view(np.float64)``, a ``UINT``
    one through ``table.view(np.uint64)``. The table is column-major (each column
    contiguous). One row per line with nothing after the last (``line_rows`` and
    ``check_end``, as PCD) is parsed in parallel, in chunks of about :data:`CHUNK_BYTES`.
    Bad input raises ``FormatError`` with the byte offset, the row and the field that was
    expected.
    """
    kinds = np.ascontiguousarray(kinds, dtype=np.int64)
    stored = (kinds != SKIP) & (kinds != SKIP_LIST)
    out_col = np.where(stored, np.cumsum(stored) - 1, -1).astype(np.int64)
    n_out = int(stored.sum())
    out_i = np.empty((n_out, n_rows), dtype=np.int64)
    out_f = out_i.view(np.float64)
    n_float = int(((kinds == FLOAT) | (kinds == PACKED_RGB)).sum())
    slow = np.empty((n_rows * n_float, 4), dtype=np.int64)
    status = _BLANK_LINES
    if line_rows and check_end:
        bounds = _chunk_bounds(buf, start, max(1, (len(buf) - start) // CHUNK_BYTES))
        lines = np.array([np.count_nonzero(buf[a:b] == 10) for a, b in zip(bounds[:-1], bounds[1:])], dtype=np.int64)
        lines += (bounds[1:] > bounds[:-1]) & (buf[np.maximum(bounds[1:] - 1, 0)] != 10)  # a last line without newline
        row_at = np.concatenate([[0], np.cumsum(lines)])
        status, pos, row, col, n_slow = _parse_lines(buf, bounds, row_at, n_rows, kinds, out_col, out_i, out_f, slow)
    if status == _BLANK_LINES:
        status, pos, row, col, n_slow = _parse_table(
            buf, start, n_rows, kinds, out_col, line_rows, check_end, out_i, out_f, slow
        )
    if status != _OK:
        field = names[col] if col < len(names) else None
        what = {
            _BAD_TOKEN: f"a number for field {field!r} (row {row})",
            _EOF: f"{n_rows} rows of {len(kinds)} values; the data ends in row {row} at field {field!r}",
            _SHORT_ROW: f"a value for field {field!r} before the end of line (row {row})",
            _LONG_ROW: f"the end of line after {len(kinds)} values (row {row})",
            _OVERFLOW: f"an integer within range for field {field!r} (row {row})",
            _TRAILING: f"no data after the {n_rows} declared rows",
        }[status]
        if status in (_BAD_TOKEN, _OVERFLOW):
            token = bytes(buf[pos : pos + 24]).split(None, 1)[0] if pos < len(buf) else b""
            what += f", found {token!r}"
        raise FormatError(path, int(pos), what)
    for s, e, r, c in slow[:n_slow]:
        value = float(bytes(buf[s:e]))
        if kinds[c] == FLOAT:
            out_f[out_col[c], r] = value
        else:
            out_i[out_col[c], r] = int(np.float32(value).view(np.uint32))
    return out_i.T, int(pos)


def typed_column(path: str, table: np.ndarray, cols: slice, kind: int, dtype: np.dtype, name: str) -> np.ndarray:
    """Columns ``cols`` of a :func:`parse_table` result as ``dtype`` (``(N, k)``).

    Integers are range-checked against ``dtype`` (``FormatError`` naming the field and row);
    ``PACKED_RGB`` columns come back as float32 holding the packed bits.
    """
    block = table[:, cols]
    if kind == FLOAT:
        return block.view(np.float64).astype(dtype)
    if kind == PACKED_RGB:
        return block.astype(np.uint32).view(np.float32)
    src = block.view(np.uint64) if kind == UINT else block
    info = np.iinfo(dtype)
    if src.size and (src.min() < info.min or src.max() > info.max):
        bad = int(np.argmax(((src < info.min) | (src > info.max)).any(axis=1)))
        raise FormatError(path, None, f"values of field {name!r} within the {np.dtype(dtype)} range (row {bad})")
    return src.astype(dtype)


def _warmup() -> None:
    buf = np.frombuffer(b"1 -2 3.5 nan 7 1e300 4 9 9\n2 3 4 5 0.5 1 0 \n", dtype=np.uint8)
    kinds = np.array([INT, UINT, FLOAT, FLOAT, PACKED_RGB, FLOAT, SKIP_LIST], dtype=np.int64)
    names = ["a", "b", "c", "d", "e", "f", "g"]
    try:
        parse_table("<warmup>", buf, 0, 2, kinds, names, True, True)
    except FormatError:
        pass
    parse_table("<warmup>", np.frombuffer(b"1 2 3", dtype=np.uint8), 0, 1, np.array([FLOAT] * 3), names, False, False)
