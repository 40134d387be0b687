"""Canonicalization (RFC 6376 section 3.4; RFC 4870 section 3.4 for DomainKeys), over bytes.

Header fields are canonicalized one at a time.  Bodies are canonicalized as a
stream of pieces of at most :data:`BLOCK` bytes and hashed as they come, so a
body is never copied whole (a 30 MB message costs a few MB, not 90), and the
time is linear in the body whatever its shape: runs of white space, a bare CR
before a million empty lines, a 10 MB line.  Within a piece the work is done
by bytes methods, not per-line Python loops.

Body methods: ``simple`` and ``relaxed`` (DKIM), ``nofws`` and ``dk-simple``
(DomainKeys, whose ``simple`` gives an empty body as nothing, not CRLF).
"""
from __future__ import annotations

import hashlib
import re
from typing import Dict, Iterable, Iterator, Optional, Tuple, Union

BLOCK = 1 << 15  # pieces that stay in the CPU cache through every pass: a third faster than 1 MiB
BODY_METHODS = ("simple", "relaxed", "nofws", "dk-simple")
_WSP_RUN = re.compile(rb"[ \t]+")
_BARE_CR = re.compile(rb"\r(?!\n)")
Bytes = Union[bytes, memoryview]


def canon_header(name: bytes, value: bytes, method: str) -> bytes:
    """One header field canonicalized (``simple`` or ``relaxed``), with its CRLF."""
    if method == "simple":
        return name + b":" + value
    if value.endswith(b"\r\n"):
        value = value[:-2]
    if b"\r\n" in value:  # only CRLFs that fold are left inside a field, so unfolding drops them all
        value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.rstrip(b" \t").lower() + b":" + value.strip(b" ") + b"\r\n"


def _relaxed(piece: bytes) -> bytes:
    """Relaxed body rules within whole lines: WSP runs to one SP, none before CRLF."""
    if b"\t" in piece:
        piece = piece.replace(b"\t", b" ")
    parts = piece.split(b"  ")  # one pass; a run of 2k or 2k+1 spaces leaves k-1 empty parts or a leading " "
    if len(parts) > 1 + len(piece) // 256:
        # dense white space: passes of bytes.replace, each shortening every run about eightfold, beat a
        # Python step per run (100 ms per MB of white-space lines)
        piece = b" ".join(parts)
        while b"  " in piece:
            piece = piece.replace(b"    ", b" ").replace(b"  ", b" ")
    elif len(parts) > 1:  # prose: a few runs, mended where they are
        tail = [b""] if not parts[-1] else []  # the piece ended in a run: one space stays
        piece = b" ".join([parts[0]] + [p[1:] if p[:1] == b" " else p for p in parts[1:] if p] + tail)
    parts = piece.split(b" \r\n")
    return b"\r\n".join(parts) if len(parts) > 1 else piece


def _nofws(piece: bytes) -> bytes:
    """DomainKeys nofws: every SP, HTAB and CR that does not end a line removed."""
    piece = piece.translate(None, b" \t")
    return _BARE_CR.sub(b"", piece) if piece.count(b"\r") != piece.count(b"\r\n") else piece


_TRANSFORMS = {"simple": None, "dk-simple": None, "relaxed": _relaxed, "nofws": _nofws}


def _trailing_crlfs(piece: bytes) -> int:
    """How many CRLF pairs end ``piece`` (a bare CR or LF before them is not one of them)."""
    tail_len = len(piece) - len(piece.rstrip(b"\r\n"))
    if tail_len < 2 or not piece.endswith(b"\r\n"):
        return 0
    tail = piece[-tail_len:]
    # In a run of CR and LF, pairs alternate "\r\n\r\n" after the last doubled character.
    start = max(tail.rfind(b"\r\r"), tail.rfind(b"\n\n")) + 1
    if tail[start:start + 1] == b"\n":
        start += 1
    return (tail_len - start) // 2


def canonical_body(data: bytes, method: str, start: int = 0, block: int = BLOCK) -> Iterator[Bytes]:
    """The canonical form of the body ``data[start:]``, piece by piece (each at most about ``block``).

    A body without a final CRLF gets one; empty lines at the end are dropped; an empty
    body is CRLF for ``simple``, nothing for the other methods.
    """
    if method not in _TRANSFORMS:
        raise ValueError(f"unknown body canonicalization {method!r}")
    transform = _TRANSFORMS[method]
    n = len(data)
    pos, carry, pending, content = start, b"", 0, False

    def emit(piece: bytes) -> Iterator[Bytes]:
        nonlocal pending, content
        if transform is not None:
            piece = transform(piece)
        pairs = _trailing_crlfs(piece)
        head = len(piece) - 2 * pairs
        if head:
            while pending:  # empty lines held back turned out not to end the body
                step = min(pending, max(1, block // 2))
                yield b"\r\n" * step
                pending -= step
            yield memoryview(piece)[:head]
            content = True
        pending += pairs

    while pos < n:
        end = min(n, pos + block)
        cut = data.rfind(b"\r\n", pos, end) if end < n else -1
        stop = cut + 2 if cut >= 0 else end
        piece = carry + data[pos:stop] if carry else data[pos:stop]
        pos, carry = stop, b""
        if stop < n and cut < 0:  # a line longer than a block: hold back what the next bytes may change
            cr = piece.endswith(b"\r")
            if cr:
                piece = piece[:-1]
            if method == "relaxed":
                kept = piece.rstrip(b" \t")
                carry = b" " if len(kept) < len(piece) else b""
                piece = kept
            carry += b"\r" if cr else b""
        elif stop == n and not piece.endswith(b"\r\n"):
            piece += b"\r\n"  # RFC 6376 3.4.3 / 3.4.4: a body without a final CRLF gets one
        yield from emit(piece)
    if content:
        yield b"\r\n"
    elif method == "simple":
        yield b"\r\n"


def canon_body(body: bytes, method: str) -> bytes:
    """The whole canonical body (for tests and small bodies; hashing uses :func:`body_hashes`)."""
    return b"".join(bytes(piece) for piece in canonical_body(body, method))


def body_hashes(data: bytes, method: str, wanted: Iterable[Tuple[str, Optional[int]]],
                start: int = 0) -> Dict[Tuple[str, Optional[int]], bytes]:
    """Digests of the canonical body ``data[start:]`` in one pass, for each (hash name, l= or None).

    Also ``("length", None)``: the whole canonical length, as 8 big-endian bytes.
    A limit beyond the canonical length hashes the whole body (the caller checks l=).
    """
    wanted = list(dict.fromkeys(wanted))
    hashers = {w: hashlib.new(w[0]) for w in wanted}
    total = 0
    for piece in canonical_body(data, method, start):
        size = len(piece)
        for (name, limit), hasher in hashers.items():
            if limit is None:
                hasher.update(piece)
            elif total < limit:
                hasher.update(piece[:limit - total] if total + size > limit else piece)
        total += size
    digests = {w: h.digest() for w, h in hashers.items()}
    digests[("length", None)] = total.to_bytes(8, "big")
    return digests


def body_hash(data: bytes, method: str, hash_name: str = "sha256", start: int = 0) -> Tuple[bytes, int]:
    """(digest, canonical length) of the body ``data[start:]``."""
    found = body_hashes(data, method, [(hash_name, None)], start)
    return found[(hash_name, None)], int.from_bytes(found[("length", None)], "big")
