"""Authentication-Results (RFC 8601): the header we write, the one reader of ours, and forged copies removed.

We write the header ourselves rather than with authres, because authres writes
a property value holding "@" as it is, and a ";" in such a value (an address
from the message, a reason) would start a new clause.  Here every value is a
token, a strict ``local-part@domain``, or a correctly quoted string, whatever
it contains (RFC 8601 section 2.2), and reasons never carry raw control or
8-bit characters.  :func:`parse` is a strict reader of the same grammar:
whatever we write, it reads back as written; whatever does not fit is an
error, never a guess.  authres stays the independent reader the tests check
our header against.

Incoming fields that claim our authserv-id are forged or stale and go before
ours is added (RFC 8601 section 5), also when a mail reader would see them
where we would not: behind a bare CR or LF inside another field (Python's
email parser, and so a Salmon handler, breaks lines there), with the id as an
encoded word, or with a trailing dot.
"""
from __future__ import annotations

import email.errors
import email.header
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from salmon_dkim.core.message import AddressError, comment_end, remove_fields
from salmon_dkim.core.results import SignatureResult, VerificationReport
from salmon_dkim.core.tags import fold

FIELD = "Authentication-Results"
MAX_LINE = 78
REASON_LIMIT = 120

_TSPECIALS = '()<>@,;:\\"/[]?='
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 2045 token: CHAR but SPACE, CTLs, tspecials
_ADDRESS = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)?"
                      r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_KEYWORD = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_DIGITS = re.compile(r"[0-9]+")
# White space and comments that hold no ( ) or \\, unrolled: an alternation per comment is 2.5 times slower.
_FLAT_CFWS = re.compile(r"[ \t\r\n]*+(?:\([^()\\]*+\)[ \t\r\n]*+)*+")
_FLAT_COMMENT = re.compile(r"\(([^()\\]*)\)")


class AuthResError(ValueError):
    """An Authentication-Results value that does not follow RFC 8601's grammar."""


@dataclass(frozen=True)
class Property:
    """``ptype.name=value``, e.g. header.d=example.com."""

    ptype: str
    name: str
    value: str


@dataclass(frozen=True)
class Clause:
    """One result: ``method=result (comment) reason="..." ptype.name=value ...``."""

    method: str
    result: str
    reason: Optional[str] = None
    comment: Optional[str] = None
    properties: Tuple[Property, ...] = field(default=())

    def prop(self, ptype: str, name: str) -> Optional[str]:
        """The value of the first ``ptype.name`` property, or None."""
        for p in self.properties:
            if (p.ptype, p.name) == (ptype, name):
                return p.value
        return None


# -- writing ---------------------------------------------------------------------------------------

def printable(text: str, limit: Optional[int] = None) -> str:
    """Text as we write it in a header: printable ASCII only (anything else becomes "?"), cut at limit."""
    text = _UNPRINTABLE.sub("?", text if limit is None else text[:limit])
    return text


def quote(text: str) -> str:
    """A quoted-string (RFC 5322) holding ``text``: backslash and double quote escaped."""
    return '"' + printable(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def value(text: str) -> str:
    """A property value as RFC 8601 allows it: a token or local-part@domain as it is, else quoted."""
    if _TOKEN.fullmatch(text) or (_ADDRESS.fullmatch(text) and len(text) <= 254):
        return text
    return quote(text)


def clause_text(clause: Clause) -> str:
    """One clause as we write it: ``method=result (comment) reason=\"...\" ptype.name=value ...``."""
    for word in (clause.method, clause.result):
        if not _KEYWORD.fullmatch(word):
            raise ValueError(f"{word!r} is not an RFC 8601 keyword")
    parts = [f"{clause.method}={clause.result}"]
    if clause.comment:
        parts.append("(" + re.sub(r"[()\\]", "", printable(clause.comment)) + ")")
    if clause.reason:
        parts.append("reason=" + quote(printable(clause.reason, REASON_LIMIT)))
    for p in clause.properties:
        if not (_KEYWORD.fullmatch(p.ptype) and _KEYWORD.fullmatch(p.name)):
            raise ValueError(f"{p.ptype}.{p.name} is not an RFC 8601 property name")
        parts.append(f"{p.ptype}.{p.name}={value(p.value)}")
    return " ".join(parts)


def write(authserv_id: str, clauses: Sequence[Clause], comment: Optional[str] = None) -> bytes:
    """``Authentication-Results: ID; ...`` CRLF-terminated: one clause a line, folded at spaces within 78.

    No clauses: ``ID; none`` (RFC 8601 section 2.2), after ``comment`` if given (why nothing was
    checked).  ValueError for an id that is not a token (the configuration refuses those at load time).
    """
    if not _TOKEN.fullmatch(authserv_id):
        raise ValueError(f"authserv-id {authserv_id!r} is not a token")
    none = "none" if comment is None else "(" + re.sub(r"[()\\]", "", printable(comment, REASON_LIMIT)) + ") none"
    texts = [clause_text(c) for c in clauses] or [none]
    lines = [f"{FIELD}: {authserv_id};"]
    for i, text in enumerate(texts):
        end = ";" if i < len(texts) - 1 else ""
        lines += fold("", [" " + word for word in (text + end).split(" ")], MAX_LINE)
    return "\r\n".join(lines).encode("ascii") + b"\r\n"


def signature_clause(r: SignatureResult) -> Clause:
    """``dkim=`` (header.d, .s, .a and RFC 6008 .b) or ``domainkeys=`` (header.d and header.from or
    header.sender, the address d= was checked against) for one signature."""
    if r.type == "domainkeys":
        props = [("d", r.domain)] + ([(r.identity_source, r.identity)] if r.identity_source in ("from", "sender")
                                     and r.identity else [])
    else:
        props = [("d", r.domain), ("s", r.selector), ("a", r.algorithm), ("b", r.b)]
    return Clause(r.type, r.result, None if r.result == "pass" else r.reason,
                  "test mode key" if r.testing else None,
                  tuple(Property("header", name, text) for name, text in props if text))


def report_clauses(report: VerificationReport) -> List[Clause]:
    """The clauses of a verification: one per signature (``dkim=none`` when unsigned), then arc= and
    dkim-adsp= when they ran."""
    # a DomainKey-Signature not checked (result "none") is no result: domainkeys=none would say "not signed"
    clauses = [signature_clause(r) for r in report.results if not (r.type == "domainkeys" and r.result == "none")]
    if not clauses:
        clauses.append(Clause("dkim", "none", report.unverified_reason))
    if report.arc:
        clauses.append(Clause("arc", report.arc, None if report.arc == "pass" else report.arc_reason))
    if report.adsp:
        domains = report.authors.domains if report.authors else ()
        clauses.append(Clause("dkim-adsp", report.adsp, None if report.adsp == "pass" else report.adsp_reason,
                              properties=(Property("header", "from", domains[0]),) if domains else ()))
    if report.spf is not None:
        clauses.append(spf_clause(report.spf))
    if report.dmarc is not None:
        clauses.append(dmarc_clause(report.dmarc))
    return clauses


def spf_clause(spf) -> Clause:
    """``spf=`` with smtp.mailfrom (or smtp.helo for a null sender), RFC 7208 section 9.1."""
    prop = "helo" if spf.identity == "helo" else "mailfrom"
    return Clause("spf", spf.result, None if spf.result in ("pass", "none") else spf.reason,
                  properties=(Property("smtp", prop, spf.address),) if spf.address else ())


def dmarc_clause(dmarc) -> Clause:
    """``dmarc=`` with header.from and policy.dmarc (RFC 7489 section 11.2); an override says why."""
    reason = dmarc.override_comment and f"local policy override ({dmarc.override}): {dmarc.override_comment}"
    props = [("header", "from", dmarc.domain), ("policy", "dmarc", dmarc.policy or "")]
    return Clause("dmarc", dmarc.result, reason or (None if dmarc.result in ("pass", "none") else dmarc.reason),
                  properties=tuple(Property(t, n, v) for t, n, v in props if v))


def header_for(authserv_id: str, report: VerificationReport, extra: Sequence[Clause] = ()) -> bytes:
    """Our Authentication-Results field for a verification, with ``extra`` clauses after its own."""
    return write(authserv_id, report_clauses(report) + list(extra))


def auth_clause(user: str) -> Clause:
    """``auth=pass smtp.auth=USER`` for a session that authenticated (RFC 8601 section 2.7.4)."""
    return Clause("auth", "pass", properties=(Property("smtp", "auth", user),))


# -- reading ---------------------------------------------------------------------------------------

class _Reader:
    """A strict single-pass reader of an Authentication-Results value (RFC 8601 section 2.2)."""

    def __init__(self, text: str, keep_comments: bool = True) -> None:
        self.text, self.i, self.comments, self.keep_comments = text, 0, [], keep_comments

    def cfws(self) -> None:
        text = self.text
        while True:  # a Python step per nested comment, not per character or plain comment
            end = _FLAT_CFWS.match(text, self.i).end()
            if end > self.i:
                if self.keep_comments:
                    self.comments += _FLAT_COMMENT.findall(text, self.i, end)
                self.i = end
            if not text.startswith("(", self.i):
                return
            comment = self.comment()
            if self.keep_comments:
                self.comments.append(comment)

    def comment(self) -> str:
        start = self.i
        try:
            self.i = comment_end(self.text, start)  # the mailbox parser's rules: nesting, quoted pairs
        except AddressError as exc:
            raise AuthResError(str(exc)) from None
        return self.text[start + 1:self.i - 1]

    def expect(self, char: str) -> None:
        self.cfws()
        if not self.text.startswith(char, self.i):
            raise AuthResError(f"expected {char!r} at {self.i}")
        self.i += 1

    def at(self, char: str) -> bool:
        self.cfws()
        return self.text.startswith(char, self.i)

    def match(self, pattern: re.Pattern, what: str) -> str:
        self.cfws()
        found = pattern.match(self.text, self.i)
        if not found:
            raise AuthResError(f"expected {what} at {self.i}")
        self.i = found.end()
        return found.group()

    def quoted(self) -> str:
        text, out = self.text, []
        self.i += 1
        while self.i < len(text):
            c = text[self.i]
            if c == "\\" and self.i + 1 < len(text):
                out.append(text[self.i + 1])
                self.i += 2
            elif c == '"':
                self.i += 1
                return re.sub(r"\r\n(?=[ \t])", "", "".join(out))
            else:
                out.append(c)
                self.i += 1
        raise AuthResError("a quoted string is not closed")

    def value(self) -> str:
        """A token, local-part@domain, or quoted-string."""
        self.cfws()
        if self.text.startswith('"', self.i):
            return self.quoted()
        found = _ADDRESS.match(self.text, self.i)
        token = _TOKEN.match(self.text, self.i)
        best = max((m for m in (found, token) if m), key=lambda m: m.end(), default=None)
        if best is None:
            raise AuthResError(f"expected a value at {self.i}")
        self.i = best.end()
        return best.group()


def parse(value: "bytes | str") -> Tuple[str, List[Clause]]:
    """(authserv-id, clauses) of an Authentication-Results value (after the colon), strictly.

    Accepts exactly RFC 8601's grammar: what :func:`write` writes reads back as written.
    AuthResError for anything else.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if text.lower().startswith(FIELD.lower() + ":"):
        text = text[len(FIELD) + 1:]
    reader = _Reader(text)
    authserv_id = reader.value()
    reader.cfws()
    if text[reader.i:reader.i + 1].isdigit():  # authres-version
        reader.match(_DIGITS, "a version")
    clauses: List[Clause] = []
    reader.expect(";")
    reader.cfws()
    if re.match(r"none\s*$", text[reader.i:], re.IGNORECASE):
        return authserv_id, []
    while True:
        method = reader.match(_KEYWORD, "a method").lower()
        if reader.at("/"):
            reader.expect("/")
            reader.match(_DIGITS, "a method version")
        reader.expect("=")
        result = reader.match(_KEYWORD, "a result").lower()
        reader.comments.clear()
        reader.cfws()
        comment = reader.comments[0] if reader.comments else None
        reason = None
        props: List[Property] = []
        while not reader.at(";") and reader.i < len(text):
            name = reader.match(_KEYWORD, "a property").lower()
            if name == "reason" and reader.at("=") and not props and reason is None:
                reader.expect("=")
                reason = reader.value()
                continue
            reader.expect(".")
            prop = reader.match(_KEYWORD, "a property name").lower()
            reader.expect("=")
            props.append(Property(name, prop, reader.value()))
            reader.cfws()
        clauses.append(Clause(method, result, reason, comment, tuple(props)))
        if reader.i >= len(text):
            return authserv_id, clauses
        reader.expect(";")
        reader.cfws()
        if reader.i >= len(text):  # a ";" after the last clause
            return authserv_id, clauses


# -- whose header is it ------------------------------------------------------------------------------

_SCAN_LIMIT = 16384  # bytes before the authserv-id (comments); beyond that nothing legitimate
# Fields with encoded words decoded per message (the email package takes ~30 us a field); past that
# many, such a field cannot be read and goes like any unreadable one.  Nobody legitimate sends them.
_DECODE_LIMIT = 50


def authserv_id_of(value: bytes, *, decode: bool = True) -> Optional[str]:
    """The authserv-id a field value claims, as a mail reader would see it: lower case, no trailing dot,
    encoded words decoded.  "" when the value is empty; None when it cannot be read (treated as forged),
    or when it holds encoded words and ``decode`` is false."""
    text = value[:_SCAN_LIMIT].decode("utf-8", "replace")
    if "=?" in text[:2048]:  # a Salmon handler reads the header with encoded words decoded
        if not decode:
            return None
        try:
            text = str(email.header.make_header(email.header.decode_header(text[:2048])))
        except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):  # bad base64 is the last
            return None
    reader = _Reader(text, keep_comments=False)
    try:
        reader.cfws()
        if reader.i >= len(text):
            return None if len(value) > _SCAN_LIMIT else ""
        return reader.value().strip().rstrip(".").lower()
    except AuthResError:
        return None


_HIDDEN_LINE = re.compile(rb"(?:\r(?!\n)|(?<!\r)\n)(?![ \t])")


def _hidden_line(value: bytes) -> bool:
    """Whether a bare CR or LF starts a line inside the value (counting first: a regex search that
    may start at any CR or LF runs at a twentieth of the speed of bytes.count)."""
    pairs = value.count(b"\r\n")
    if value.count(b"\r") == pairs and value.count(b"\n") == pairs:
        return False
    return _HIDDEN_LINE.search(value) is not None


_COLON = re.compile(rb"[ \t]*:")


def _visible_fields(value: bytes, names: Iterable[bytes]) -> List[Tuple[bytes, bytes]]:
    """(name, value) of each field called one of ``names`` (lower case) that a mail reader may see
    inside a field value, starting after a bare CR or LF (Python's email parser breaks lines there).

    The names are found with bytes.find in the lower-cased value: splitting at every hidden line
    took a Python step per bare CR, and a pattern that may start at any CR or LF is slow too.
    """
    low, found = value.lower(), []
    for name in names:
        at = low.find(name)
        while at >= 0:
            before = low[at - 1] if at else 0
            if before == 13 or before == 10 and low[at - 2:at - 1] != b"\r":  # a bare CR or LF
                colon = _COLON.match(value, at + len(name))
                if colon:
                    end = _HIDDEN_LINE.search(value, colon.end())
                    found.append((name, value[colon.end():end.start() if end else len(value)]))
            at = low.find(name, at + 1)
    return found


def claims_ours(authserv_id: str, others: Iterable[str] = ()) -> Callable[[bytes, bytes], bool]:
    """``claims(name, value)``: whether a field (name lower case) claims to be ours: Authentication-Results
    with our authserv-id (or one that cannot be read), or a field named in ``others`` (our score header),
    also behind a bare CR or LF inside it."""
    ours = authserv_id.strip().rstrip(".").lower()
    names = {o.strip().lower().encode("ascii") for o in others if o}
    decodes = _DECODE_LIMIT

    def direct(name: bytes, value: bytes) -> bool:
        nonlocal decodes
        if name in names:
            return True
        if name == b"authentication-results":
            decodes -= b"=?" in value
            return authserv_id_of(value, decode=decodes >= 0) in (ours, None)
        return False

    hidden = names | {b"authentication-results"}

    def claims(name: bytes, value: bytes) -> bool:
        if direct(name, value):
            return True
        return _hidden_line(value) and any(direct(n, v) for n, v in _visible_fields(value, hidden))

    return claims


def remove_ours(message: bytes, authserv_id: str, others: Iterable[str] = ()) -> bytes:
    """The message without fields claiming to be ours (see :func:`claims_ours`), wherever a reader would
    see them.  Every other byte is kept as it was, line endings included."""
    return remove_fields(message, claims_ours(authserv_id, others))
