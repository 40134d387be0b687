"""DKIM message parsing and canonicalization (RFC 6376 section 3.4), over bytes.

Shared by the signer and the verifier.  Written with bytes methods and
regular expressions rather than per-line Python loops: relaxed body
canonicalization of a 1 MB body is the hot path of both.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, List, Sequence, Tuple

Header = Tuple[bytes, bytes]
"""(name, value): name as written, value everything after the colon up to and
including the CRLF that ends the (possibly folded) field."""


class MessageFormatError(ValueError):
    """The message cannot be split into header fields and a body."""


_WSP_RUN = re.compile(rb"[ \t]+")
_HEADER_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*")


def to_crlf(data: bytes) -> bytes:
    """Line endings as on the wire: every bare LF becomes CRLF; nothing else changes."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    # two replaces run at memory speed; a regex substitution per line took ~0.4 s per MB of short lines
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split_message(data: bytes) -> Tuple[List[Header], bytes]:
    """Split CRLF message bytes into header fields and body.

    A header block without a blank line after it is a message with no body.
    A line in the header block that is neither a field nor a continuation
    raises MessageFormatError.
    """
    end = data.find(b"\r\n\r\n")
    if data.startswith(b"\r\n"):
        head, body = b"", data[2:]
    elif end < 0:
        head, body = data if data.endswith(b"\r\n") or not data else data + b"\r\n", b""
    else:
        head, body = data[:end + 2], data[end + 4:]
    headers: List[Header] = []
    if not head:
        return headers, body
    for field in re.split(rb"\r\n(?![ \t])", head[:-2]):
        colon = field.find(b":")
        name = field[:colon] if colon > 0 else b""
        if colon <= 0 or not _HEADER_NAME.fullmatch(name.rstrip(b" \t")):
            if field[:1] in (b" ", b"\t") and not headers:
                raise MessageFormatError("the message starts with a continuation line")
            shown = field[:40].decode("ascii", "replace")
            raise MessageFormatError(f"header line {shown!r} is not a header field")
        headers.append((name, field[colon + 1:] + b"\r\n"))
    return headers, body


def canon_header(name: bytes, value: bytes, method: str) -> bytes:
    """One header field canonicalized, with its CRLF."""
    if method == "simple":
        return name + b":" + value
    if value.endswith(b"\r\n"):
        value = value[:-2]
    if b"\r\n" in value:  # split_message keeps only CRLFs that fold, so unfolding drops them all
        value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.strip(b" \t").lower() + b":" + value.strip(b" ") + b"\r\n"


def canon_body(body: bytes, method: str) -> bytes:
    """The body canonicalized: relaxed whitespace rules, then trailing empty lines removed."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    if method == "relaxed":
        # bytes.replace runs at memory speed; a regex over whitespace-heavy text is 20x slower.
        body = body.replace(b"\t", b" ")
        while b"  " in body:
            body = body.replace(b"    ", b" ").replace(b"  ", b" ")
        body = body.replace(b" \r\n", b"\r\n")
    tail = len(body) - len(body.rstrip(b"\r\n"))
    if tail > 2:
        if body[-tail:] == b"\r\n" * (tail // 2) and tail % 2 == 0:
            body = body[:len(body) - tail + 2]
        else:  # CRs without LF among the trailing line ends: go line by line
            while body.endswith(b"\r\n\r\n"):
                body = body[:-2]
    if body == b"\r\n":
        body = b""
    if method == "simple" and not body:
        return b"\r\n"
    return body


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"(?<=\n)")


def remove_fields(message: bytes, drop: Callable[[bytes, bytes], bool]) -> bytes:
    """The message without the header fields for which ``drop(name, value)`` is true.

    ``name`` is lower-cased and stripped, ``value`` everything after the colon, folding
    included.  Every other byte stays as it was, CRLF or LF line endings alike.
    """
    if message.startswith((b"\r\n", b"\n")):
        return message
    end = _HEAD_END.search(message)
    # The header block ends after the line ending of its last field; the blank line is the body's.
    cut = (end.start() + (2 if message.startswith(b"\r\n", end.start()) else 1)) if end else len(message)
    head, rest = message[:cut], message[cut:]
    fields: List[List[bytes]] = []
    for line in _LINE_END.split(head):
        if not line:
            continue
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = []
    for lines in fields:
        field = b"".join(lines)
        name, colon, value = field.partition(b":")
        if not (colon and drop(name.strip(b" \t").lower(), value)):
            kept.append(field)
    return b"".join(kept) + rest


def select_headers(headers: Sequence[Header], names: Iterable[bytes]) -> List[Header]:
    """Pick the header instances named by an h= list, each name from the bottom up.

    A name with no instance left selects nothing (the oversigning case).
    """
    by_name: dict = {}
    for name, value in headers:
        by_name.setdefault(name.strip(b" \t").lower(), []).append((name, value))
    chosen = []
    for name in names:
        instances = by_name.get(name.strip().lower())
        if instances:
            chosen.append(instances.pop())
    return chosen


def parse_tags(value: bytes) -> dict:
    """A DKIM tag=value list (RFC 6376 section 3.2) as {tag: value}, whitespace folded out.

    Raises ValueError naming the problem: a tag without '=', a duplicate tag,
    a tag name that is not a name.
    """
    tags = {}
    for part in value.split(b";"):
        part = part.strip(b" \t\r\n")
        if not part:
            continue
        name, eq, val = part.partition(b"=")
        name = name.strip(b" \t\r\n")
        if not eq or not _TAG_NAME.fullmatch(name):
            raise ValueError(f"tag list element {part[:30]!r} is not tag=value")
        if name in tags:
            raise ValueError(f"duplicate tag {name.decode()}=")
        tags[name] = val.strip(b" \t\r\n")
    return tags


_B_TAG = re.compile(rb"(^|;)([ \t\r\n]*b[ \t\r\n]*=)[^;]*", re.DOTALL)


def strip_b_value(value: bytes) -> bytes:
    """A DKIM-Signature (or ARC) header value with the b= value emptied, all else kept."""
    return _B_TAG.sub(lambda m: m.group(1) + m.group(2), value, count=1)


def compact(value: bytes) -> bytes:
    """A base64 tag value with its folding whitespace removed."""
    return value.translate(None, b" \t\r\n")
