"""Tag lists (RFC 6376 section 3.2) and the header fields made of them.

One parser for every tag list we read (DKIM-Signature, DomainKey-Signature,
ARC fields, key records, ADSP and DMARC records), one folder for every header
field we write (DKIM-Signature, DomainKey-Signature, ARC sets,
Authentication-Results).
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional

_FWS = b" \t\r\n"
_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*")
_B_TAG = re.compile(rb"(^|;)([ \t\r\n]*b[ \t\r\n]*=)[^;]*", re.DOTALL)
_QP = re.compile(rb"=([0-9A-F]{2})")

WIDTH = 77
"""Characters per header line before the CRLF: under 78 (RFC 5322 section 2.1.1)."""


def parse_tags(value: bytes) -> Dict[bytes, bytes]:
    """A tag=value list as {tag: value}, folding white space around tags and values removed.

    ``tag-list = tag-spec *( ";" tag-spec ) [ ";" ]``: one ";" may end the list, but an empty
    element anywhere else (``s=x;;``, ``;s=x``) is an error.  Raises ValueError naming the
    problem: an empty element, a tag without "=", a duplicate tag, a tag name that is not a name.
    """
    parts = value.split(b";")
    if len(parts) > 1 and not parts[-1].strip(_FWS):
        parts.pop()  # the one ";" allowed after the last tag-spec
    tags: Dict[bytes, bytes] = {}
    for part in parts:
        part = part.strip(_FWS)
        if not part:
            raise ValueError("empty tag list element (RFC 6376 section 3.2 allows one ';' at the end only)")
        name, eq, val = part.partition(b"=")
        name = name.rstrip(_FWS)
        if not eq or not _TAG_NAME.fullmatch(name):
            raise ValueError(f"tag list element {part[:30]!r} is not tag=value")
        if name in tags:
            raise ValueError(f"duplicate tag {name.decode()}=")
        tags[name] = val.lstrip(_FWS)
    return tags


def strip_b_value(value: bytes) -> bytes:
    """A signature field's value with the b= value emptied, all else kept (RFC 6376 section 3.7)."""
    return _B_TAG.sub(lambda m: m.group(1) + m.group(2), value, count=1)


def compact(value: bytes) -> bytes:
    """A base64 tag value with its folding white space removed."""
    return value.translate(None, _FWS)


def decode_qp(value: bytes) -> bytes:
    """A dkim-quoted-printable value (RFC 6376 section 2.11) decoded: ``=2E`` is ".", FWS dropped."""
    value = compact(value)
    return _QP.sub(lambda m: bytes((int(m.group(1), 16),)), value) if b"=" in value else value


# -- writing -------------------------------------------------------------------------------------

def fold(first: str, pieces: Iterable[str], width: int = WIDTH) -> List[str]:
    """Header lines: ``first``, then each piece on the current line if it fits, else on a new one.

    A piece that starts a new line gets a leading space (folding white space) if it has
    none; breaking only between pieces keeps the unfolded text identical.
    """
    lines = [first]
    for piece in pieces:
        if lines[-1].strip() and len(lines[-1]) + len(piece) > width:
            lines.append(piece if piece[:1] in (" ", "\t") else " " + piece)
        else:
            lines[-1] += piece
    return lines


def spill(lines: List[str], text: str, width: int = WIDTH) -> List[str]:
    """``text`` that may break anywhere (base64) appended: it fills the last line, then whole new lines."""
    room = max(0, width - len(lines[-1]))
    lines[-1] += text[:room]
    lines.extend(" " + text[start:start + width - 1] for start in range(room, len(text), width - 1))
    return lines


def signature_lines(name: str, tags: Iterable[tuple], signed: Optional[Iterable[str]] = None,
                    width: int = WIDTH) -> List[str]:
    """A signature field up to an empty ``b=``: ``name:`` then ``tag=value;`` each, then h= broken at
    its colons, then ``b=`` (on a line of its own when fewer than 20 columns are left).

    Sign the field as these lines give it, then :func:`spill` the b= value onto them.
    """
    pieces = [f" {tag}={value};" for tag, value in tags]
    if signed is not None:
        names = [n + ":" for n in signed]
        names[0], names[-1] = " h=" + names[0], names[-1][:-1] + ";"
        pieces += names
    lines = fold(name + ":", pieces, width)
    if width - len(lines[-1]) < 20:
        lines.append("")
    lines[-1] += " b="
    return lines


def header_bytes(lines: List[str]) -> bytes:
    """Folded lines as one header field, CRLF-terminated."""
    return "\r\n".join(lines).encode("ascii") + b"\r\n"
