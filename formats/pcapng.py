"""pcapng blocks (Wireshark's default capture format) walked by a numba kernel for formats.pcap.

Sections of either byte order, several interfaces each with its own link type, ``if_tsresol``
(decimal or binary) and ``if_tsoffset``; Enhanced and obsolete Packet Blocks carry packets,
Simple Packet Blocks have no time stamp (their records get status ``NO_TIMESTAMP``); other
blocks (name resolution, statistics, custom) are skipped. Two walks over the block chain: the
first checks the structure and counts, the second fills arrays of exactly that size, so no
allocation depends on an unchecked number.
"""

from __future__ import annotations

import numpy as np

from engine._jit import jit
from formats.errors import FormatError
from formats.pcap import _LINKTYPES, NO_TIMESTAMP, TRUNCATED, _u16, _u32, _udp_payload

_LINK_CODES = np.array([_LINKTYPES.get(t, -1) for t in range(256)], np.int64)  # link code by link type
# pcapng block types and structural errors (kernel error code -> what was expected there)
_SHB = 0x0A0D0D0A
_IDB = 1
_PB = 2
_SPB = 3
_EPB = 6
_NG_ERRORS = {
    2: "byte-order magic 1a2b3c4d in either byte order and major version 1",
    3: "a block total length >= 12, a multiple of 4",
    4: "the block's trailing total length equal to its leading one",
    5: "a packet block whose captured length fits the block, of a declared interface",
    6: "an Interface Description Block of >= 20 bytes with options inside it (if_tsresol <= 1e-18 s)",
}


@jit
def _ng_ts_ns(raw, decimal, exponent, offset_s):
    """A pcapng time stamp in ns: ``raw`` units of 10^-exponent s (or 2^-exponent s)."""
    if decimal:
        if exponent <= 9:
            scale = np.int64(1)
            for _ in range(9 - exponent):
                scale *= 10
            ns = raw * scale
        else:
            scale = np.int64(1)
            for _ in range(exponent - 9):
                scale *= 10
            ns = raw // scale
    elif exponent <= 30:
        ns = (raw >> exponent) * 1_000_000_000 + (((raw & ((np.int64(1) << exponent) - 1)) * 1_000_000_000) >> exponent)
    else:
        ns = np.int64(raw / 2.0 ** exponent * 1e9)
    return ns + offset_s * 1_000_000_000


@jit
def _walk_pcapng(buf, fill, n_rec, n_if):
    """Walk a pcapng file's blocks. With ``fill`` False: count packet blocks and interfaces and
    check the structure; with ``fill`` True (``n_rec``, ``n_if`` from the first walk) also return
    each record's payload offset, length, ts_ns, port and status.

    Returns (error code, error offset, records, interfaces, truncated-at or -1, arrays...)."""
    size = buf.shape[0]
    off = np.zeros(n_rec, np.int64)
    length = np.zeros(n_rec, np.int64)
    ts = np.zeros(n_rec, np.int64)
    port = np.zeros(n_rec, np.int64)
    status = np.zeros(n_rec, np.uint8)
    link = np.zeros(n_if, np.int64)
    decimal = np.ones(n_if, np.bool_)
    exponent = np.full(n_if, 6, np.int64)
    tsoffset = np.zeros(n_if, np.int64)
    pos = 0
    big = False
    base = 0  # first interface of the current section (the file starts with a section header)
    n = 0
    m = 0
    while pos < size:
        if pos + 12 > size:
            return 0, pos, n, m, pos, off, length, ts, port, status
        btype = _u32(buf, pos, big)
        if btype == _SHB:
            if pos + 28 > size:
                return 0, pos, n, m, pos, off, length, ts, port, status
            if _u32(buf, pos + 8, False) == 0x1A2B3C4D:
                big = False
            elif _u32(buf, pos + 8, True) == 0x1A2B3C4D:
                big = True
            else:
                return 2, pos + 8, n, m, -1, off, length, ts, port, status
            if _u16(buf, pos + 12, big) != 1:
                return 2, pos + 12, n, m, -1, off, length, ts, port, status
            base = m
        blen = _u32(buf, pos + 4, big)
        if blen < 12 or blen % 4 != 0:
            return 3, pos + 4, n, m, -1, off, length, ts, port, status
        if pos + blen > size:
            return 0, pos, n, m, pos, off, length, ts, port, status
        if _u32(buf, pos + blen - 4, big) != blen:
            return 4, pos + blen - 4, n, m, -1, off, length, ts, port, status
        end_body = pos + blen - 4
        if btype == _IDB:
            if blen < 20:
                return 6, pos, n, m, -1, off, length, ts, port, status
            if fill:
                lt = _u16(buf, pos + 8, big)
                link[m] = _LINK_CODES[lt] if lt < 256 else -1
                q = pos + 16
                while q + 4 <= end_body:
                    code = _u16(buf, q, big)
                    olen = _u16(buf, q + 2, big)
                    if code == 0:
                        break
                    if q + 4 + olen > end_body:
                        return 6, q, n, m, -1, off, length, ts, port, status
                    if code == 9 and olen >= 1:
                        v = np.int64(buf[q + 4])
                        decimal[m] = (v & 0x80) == 0
                        exponent[m] = v & 0x7F
                        if (decimal[m] and exponent[m] > 18) or exponent[m] > 62:
                            return 6, q + 4, n, m, -1, off, length, ts, port, status
                    elif code == 14 and olen >= 8:
                        lo = _u32(buf, q + 4, big)
                        hi = _u32(buf, q + 8, big)
                        tsoffset[m] = (hi << 32) | lo if not big else (lo << 32) | hi
                    q += 4 + (olen + 3) // 4 * 4
            m += 1
        elif btype == _EPB or btype == _PB or btype == _SPB:
            simple = btype == _SPB
            head = 12 if simple else 28
            if blen < head + 4:
                return 5, pos, n, m, -1, off, length, ts, port, status
            if simple:
                iface = base
                caplen = min(_u32(buf, pos + 8, big), blen - 16)
            else:
                iface = base + (_u16(buf, pos + 8, big) if btype == _PB else _u32(buf, pos + 8, big))
                caplen = _u32(buf, pos + 20, big)
            if iface >= m or pos + head + caplen > end_body:
                return 5, pos, n, m, -1, off, length, ts, port, status
            if fill:
                start = pos + head
                if simple:
                    status[n] = NO_TIMESTAMP
                else:
                    raw = (_u32(buf, pos + 12, big) << 32) | _u32(buf, pos + 16, big)
                    ts[n] = _ng_ts_ns(raw, decimal[iface], exponent[iface], tsoffset[iface])
                    status[n], off[n], length[n], port[n] = _udp_payload(buf, start, start + caplen, link[iface])
            n += 1
        pos += blen
    return 0, -1, n, m, -1, off, length, ts, port, status


def index_pcapng(buf: np.ndarray, path: str):
    """(n, offsets, lengths, ts_ns, ports, status, truncated_at) of a pcapng buffer."""
    err, at, n, m, trunc, *_ = _walk_pcapng(buf, False, 0, 0)
    if err:
        raise FormatError(path, int(at), _NG_ERRORS[err])
    err, at, n, m, trunc, off, length, ts, port, status = _walk_pcapng(buf, True, n, m)
    if err:
        raise FormatError(path, int(at), _NG_ERRORS[err])
    if trunc >= 0:  # a cut last block counts as a truncated record, as in a classic pcap
        off, length, ts, port = (np.append(a, 0) for a in (off, length, ts, port))
        status = np.append(status, np.uint8(TRUNCATED))
        n += 1
    return n, off, length, ts, port, status, (int(trunc) if trunc >= 0 else None)


def _warmup() -> None:
    index_pcapng(np.frombuffer(bytes.fromhex("0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff1c000000"), np.uint8),
                 "<warmup>")
