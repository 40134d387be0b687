"""A message as bytes, parsed once: header fields with their raw bytes, the body where it starts.

Every step of a message's way (verification, policy, our header, signing)
works on one :class:`Message`.  The body is never copied: it is a view into
the received bytes.  Also here, the one mailbox parser (RFC 5322 address
lists, with IDNA for the domain), used wherever an author or sender address
matters, and the editing of header blocks that keeps every other byte.

Everything is a single pass over the input: no regular expression here can
backtrack, no loop trims one character at a time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

Header = Tuple[bytes, bytes]
"""(name, value): name as written, value everything after the colon up to and
including the CRLF that ends the (possibly folded) field."""

FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
"""RFC 5322 field name: printable ASCII but the colon."""


class MessageFormatError(ValueError):
    """The message cannot be split into header fields and a body."""


def to_crlf(data: bytes) -> bytes:
    """Line endings as on the wire: every bare LF becomes CRLF; nothing else changes."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    # two replaces run at memory speed; a regex substitution per line took ~0.4 s per MB of short lines
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def field_name(name: bytes) -> bytes:
    """A field name as compared: without the white space before the colon, lower case."""
    return name.rstrip(b" \t").lower()


_FIELD_BREAK = re.compile(rb"\r\n(?![ \t])")


class Message:
    """CRLF message bytes split once into header fields and the body.

    ``fields`` are (name, value) pairs in order, top first; ``body`` a memoryview
    of the bytes after the blank line.  ``lenient`` skips header lines that are not
    fields instead of raising MessageFormatError (to report on a broken message).
    """

    __slots__ = ("data", "fields", "body_offset", "_index", "__dict__")

    def __init__(self, data: bytes, *, lenient: bool = False) -> None:
        self.data = data
        if data.startswith(b"\r\n"):
            head, self.body_offset = b"", 2
        else:
            end = data.find(b"\r\n\r\n")
            if end < 0:  # a header block without a blank line after it: no body
                head, self.body_offset = data if data.endswith(b"\r\n") or not data else data + b"\r\n", len(data)
            else:
                head, self.body_offset = data[:end + 2], end + 4
        self.fields: List[Header] = _split_fields(head, lenient)
        self._index: Optional[Dict[bytes, List[int]]] = None

    @classmethod
    def parse(cls, data: bytes, *, lenient: bool = False) -> "Message":
        """The message in ``data`` (bare LF line endings become CRLF first)."""
        return cls(to_crlf(data), lenient=lenient)

    @property
    def body(self) -> memoryview:
        return memoryview(self.data)[self.body_offset:]

    @property
    def header_bytes(self) -> bytes:
        """The header block with its blank line, as received."""
        return self.data[:self.body_offset]

    @cached_property
    def names(self) -> List[bytes]:
        """Each field's name as compared (:func:`field_name`), in field order."""
        return [field_name(n) for n, _ in self.fields]

    def positions(self, name: bytes) -> List[int]:
        """Indexes in ``fields`` of the fields called ``name`` (lower case), top first."""
        if self._index is None:
            index: Dict[bytes, List[int]] = {}
            for i, n in enumerate(self.names):
                index.setdefault(n, []).append(i)
            self._index = index
        return self._index.get(name, [])

    def repeated(self) -> List[bytes]:
        """The names of fields that appear more than once (usually none)."""
        if self._index is None:
            self.positions(b"")
        return [n for n, where in self._index.items() if len(where) > 1]

    def values(self, name: bytes) -> List[bytes]:
        """The values of the fields called ``name`` (lower case), top first."""
        return [self.fields[i][1] for i in self.positions(name)]

    def count(self, name: bytes) -> int:
        return len(self.positions(name))

    @cached_property
    def authors(self) -> "Authors":
        """The From field's addresses, parsed once (see :func:`authors`)."""
        return authors(self.values(b"from"))

    @cached_property
    def message_id(self) -> Optional[str]:
        """The Message-ID's <id>, for logs (at most 250 characters), or None."""
        for value in self.values(b"message-id"):
            found = _MESSAGE_ID.search(value[:1024])
            if found:
                return found.group(1).decode("ascii", "replace")
        return None


_MESSAGE_ID = re.compile(rb"(<[^<>\s]{1,248}>)")


_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_BAD_FIELD_START = re.compile(rb"\r\n(?![ \t])(?![\x21-\x39\x3b-\x7e]+[ \t]*:)")


def _split_fields(head: bytes, lenient: bool) -> List[Header]:
    fields: List[Header] = []
    if not head:
        return fields
    lines = _FIELD_BREAK.split(head[:-2])
    if _FIELD_START.match(head) and not _BAD_FIELD_START.search(head, 0, len(head) - 2):
        # Every line is a field (checked in one pass in C): a comprehension instead of a loop that
        # checked each name took a third of the time on a header of 100k short fields.
        return [(name, value + b"\r\n") for name, _, value in (line.partition(b":") for line in lines)]
    for field in lines:
        colon = field.find(b":")
        name = field[:colon] if colon > 0 else b""
        if colon <= 0 or not FIELD_NAME.fullmatch(name.rstrip(b" \t")):
            if lenient:
                continue
            if field[:1] in (b" ", b"\t") and not fields:
                raise MessageFormatError("the message starts with a continuation line")
            shown = field[:40].decode("ascii", "replace")
            raise MessageFormatError(f"header line {shown!r} is not a header field")
        fields.append((name, field[colon + 1:] + b"\r\n"))
    return fields


# -- editing the header block, every other byte kept -------------------------------------------

def _head_end(message: bytes) -> int:
    """Where the header block ends: after the line ending of its last field (the blank line is the body's).

    bytes.find rather than a regular expression: a pattern that may start with CR or LF is tried at
    every byte, at a twentieth of the speed (20 ms per MB of header).
    """
    lf_lf = message.find(b"\n\n")
    lf_crlf = message.find(b"\n\r\n", 0, lf_lf + 2 if lf_lf >= 0 else len(message))
    first = lf_crlf if lf_crlf >= 0 else lf_lf
    return first + 1 if first >= 0 else len(message)


def remove_fields(message: bytes, drop: Callable[[bytes, bytes], bool]) -> bytes:
    """The message without the header fields for which ``drop(name, value)`` is true.

    ``name`` is lower-cased and stripped, ``value`` everything after the colon, folding
    included.  Every other byte stays as it was, CRLF or LF line endings alike.
    """
    if message.startswith((b"\r\n", b"\n")):
        return message
    cut = _head_end(message)
    head = message[:cut]
    fields: List[List[bytes]] = []
    lines = head.split(b"\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if i < last:
            line += b"\n"
        elif not line:
            continue
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)
        else:
            fields.append([line])
    kept, dropped = [], False
    for lines in fields:
        field = b"".join(lines)
        name, colon, value = field.partition(b":")
        if colon and drop(name.strip(b" \t").lower(), value):
            dropped = True
        else:
            kept.append(field)
    return b"".join(kept) + message[cut:] if dropped else message


def prepend(message: bytes, fields: bytes) -> bytes:
    """``fields`` (CRLF-terminated header lines) put above all others, in the message's own line endings."""
    if b"\r\n" not in message[:8192] and b"\n" in message[:8192]:
        fields = fields.replace(b"\r\n", b"\n")
    return fields + message


# -- mailboxes (RFC 5322 section 3.4) ---------------------------------------------------------

class AddressError(ValueError):
    """A field that does not hold a list of mailboxes; str() says why in plain words."""


class Mailbox(NamedTuple):
    """One address: the local part as written (unquoted) and the domain in lower-case A-labels."""

    local: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"


_MAX_FIELD = 16384  # characters of an address field we parse; more is no author field anyone writes
_MAX_DEPTH = 64  # nested comments
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_WSP = re.compile(r"[ \t\r\n]+")
_ATOM = re.compile(r"[^ \t\r\n()<>\[\]:;@\\,.\"]+")  # atext, and any non-ASCII (RFC 6532)
# Text with quoted pairs, unrolled (runs of plain characters, then one pair): an alternation per
# character costs five times as much.
_QUOTED = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"', re.DOTALL)
_DOMAIN_LITERAL = re.compile(r"\[[^\[\]\\]*+(?:\\.[^\[\]\\]*+)*+\]", re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_COMMENT_TEXT = re.compile(r"[^()\\]*+(?:\\.[^()\\]*+)*+", re.DOTALL)


def _tokens(text: str) -> List[Tuple[str, str]]:
    """(kind, text) tokens of an address field; comments and white space dropped.

    kinds: "atom", "quoted", "literal", and each special as itself ("<", ">", "@", ",", ":", ";", ".").
    """
    tokens: List[Tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i = _WSP.match(text, i).end()
        elif c == "(":
            i = comment_end(text, i)
        elif c == '"':
            found = _QUOTED.match(text, i)
            if not found:
                raise AddressError("a quoted string is not closed")
            # split keeps each quoted character between the texts: the whole unquoting runs in C
            tokens.append(("quoted", "".join(_QUOTED_PAIR.split(found.group(1)))))
            i = found.end()
        elif c == "[":
            found = _DOMAIN_LITERAL.match(text, i)
            if not found:
                raise AddressError("a domain literal is not closed")
            tokens.append(("literal", found.group()))
            i = found.end()
        elif c in "<>@,:;.":
            tokens.append((c, c))
            i += 1
        elif c in ")]\\":
            raise AddressError(f"unexpected {c!r}")
        else:
            found = _ATOM.match(text, i)
            tokens.append(("atom", found.group()))
            i = found.end()
    return tokens


def comment_end(text: str, i: int) -> int:
    """The index after the comment starting at ``text[i] == "("`` (nested, with quoted pairs).

    AddressError when it is not closed or nests deeper than 64.  Time is linear in the comment.
    """
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "(":
            depth += 1
            if depth > _MAX_DEPTH:
                raise AddressError(f"comments nested more than {_MAX_DEPTH} deep")
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        else:  # a backslash with nothing after it
            break
        i = _COMMENT_TEXT.match(text, i + 1).end()  # a Python step per parenthesis, not per character
    raise AddressError("a comment is not closed")


class _Reader:
    """A recursive-descent reader over the tokens of an address-list."""

    def __init__(self, tokens: List[Tuple[str, str]]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> Optional[str]:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            found = self.peek()
            raise AddressError(f"expected {kind!r} but found {found or 'the end of the field'!r}")
        self.i += 1
        return self.tokens[self.i - 1][1]

    def address_list(self) -> List[Mailbox]:
        found: List[Mailbox] = []
        while self.peek() is not None:
            if self.peek() == ",":  # obs-addr-list allows empty elements
                self.i += 1
                continue
            found.extend(self.address(groups=True))
            if self.peek() is not None:
                self.take(",")
        return found

    def address(self, groups: bool = False) -> List[Mailbox]:
        start = self.i
        while self.peek() in ("atom", "quoted", "."):  # a phrase (display name) or a local part
            self.i += 1
        kind = self.peek()
        if kind == "@":  # addr-spec
            self.i = start
            return [self.addr_spec()]
        if kind == "<":  # name-addr
            self.i += 1
            self.skip_route()
            mailbox = self.addr_spec()
            self.take(">")
            return [mailbox]
        if kind == ":" and self.i > start and groups:  # group: display-name ":" [mailbox-list] ";"
            self.i += 1
            members: List[Mailbox] = []
            while self.peek() not in (";", None):
                if self.peek() == ",":
                    self.i += 1
                    continue
                members.extend(self.address())
            self.take(";")
            return members
        found = self.peek()
        raise AddressError(f"expected an address but found {found or 'the end of the field'!r}")

    def skip_route(self) -> None:
        """obs-route: "<@a.example,@b.example:user@c.example>" is user@c.example."""
        if self.peek() != "@":
            return
        while self.peek() in ("@", ",", "atom", ".", "literal"):
            self.i += 1
        self.take(":")

    def addr_spec(self) -> Mailbox:
        local = [self.word()]
        while self.peek() == ".":
            self.i += 1
            local.append(self.word())
        self.take("@")
        if self.peek() == "literal":
            raise AddressError("the domain is an address literal, not a domain name")
        labels = [self.take("atom")]
        while self.peek() == ".":
            self.i += 1
            if self.peek() is None or self.peek() in (">", ",", ";"):  # a trailing dot: "user@example.com."
                break
            labels.append(self.take("atom"))
        return Mailbox(".".join(local), domain_name(".".join(labels)))

    def word(self) -> str:
        if self.peek() not in ("atom", "quoted"):
            found = self.peek()
            raise AddressError(f"expected a local part but found {found or 'the end of the field'!r}")
        self.i += 1
        return self.tokens[self.i - 1][1]


def domain_name(text: str) -> str:
    """A domain as compared everywhere: lower case, no trailing dot, IDNA A-labels (RFC 5891).

    AddressError when it is not a domain name.
    """
    name = text.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise AddressError(f"domain {text[:60]!r} is not a valid internationalized domain name") from None
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError(f"domain {text[:60]!r} is not a domain name")
    return name


_COMMON_FORM = re.compile(  # "addr" or "Name <addr>" with nothing unusual: most From fields, read fast
    rb'[ \t]*+(?:(?:"[^"\\\r\n]*+"|[A-Za-z0-9 .\'-]*+)<([A-Za-z0-9.+_-]++)@([A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)*+)>'
    rb'|([A-Za-z0-9.+_-]++)@([A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)*+))[ \t]*+(?:\r\n)?')


def parse_mailboxes(value: bytes) -> List[Mailbox]:
    """The addresses in a From, Sender or similar field value (RFC 5322 address-list, UTF-8 allowed).

    Groups give their members; comments and display names are dropped.  AddressError
    (saying why) for a value that is not an address list.  Time is linear in the value.
    """
    common = _COMMON_FORM.fullmatch(value) if len(value) < 1024 else None
    if common:
        local, domain = common.group(1, 2) if common.group(1) else common.group(3, 4)
        if not local.startswith(b".") and not local.endswith(b".") and b".." not in local:
            return [Mailbox(local.decode("ascii"), domain_name(domain.decode("ascii")))]
    if len(value) > _MAX_FIELD:
        raise AddressError(f"the field is {len(value)} bytes long; more than {_MAX_FIELD} is not parsed")
    return _Reader(_tokens(value.decode("utf-8", "replace"))).address_list()


@dataclass(frozen=True)
class Authors:
    """The author of a message as its From fields give it (RFC 5322 section 3.6.2).

    ``mailboxes``: every address of every From field, top first.  ``problem``: why
    there is no single author (no From, several From fields, several addresses, a
    field that does not parse), or None.  Policies that must not be dodged with the
    From field (ADSP, DMARC) look at every domain in ``domains`` and treat an
    unparsable or missing From as RFC 7489 section 6.6.1 says.
    """

    mailboxes: Tuple[Mailbox, ...]
    fields: int
    problem: Optional[str]
    parsable: bool = True

    @property
    def single(self) -> Optional[Mailbox]:
        """The one author when there is exactly one From field with exactly one address."""
        return self.mailboxes[0] if self.problem is None else None

    @property
    def domains(self) -> Tuple[str, ...]:
        """The distinct author domains, top first (empty when none can be read)."""
        return tuple(dict.fromkeys(m.domain for m in self.mailboxes))


def authors(from_values: Sequence[bytes]) -> Authors:
    """The :class:`Authors` of the From field values given (top first)."""
    if not from_values:
        return Authors((), 0, "the message has no From field")
    found: List[Mailbox] = []
    for value in from_values:
        try:
            found.extend(parse_mailboxes(value))
        except AddressError as exc:
            return Authors(tuple(found), len(from_values), f"the From field cannot be parsed: {exc}", False)
    if len(from_values) > 1:
        return Authors(tuple(found), len(from_values),
                       f"the message has {len(from_values)} From fields (RFC 5322 allows one)")
    if not found:
        return Authors((), 1, "the From field holds no address")
    if len(found) > 1:
        return Authors(tuple(found), 1, f"the From field holds {len(found)} addresses")
    return Authors(tuple(found), 1, None)
