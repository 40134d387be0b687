"""The Authentication-Results header (RFC 8601) for a verified message, built with authres.

One header per message, one ``dkim=`` result per signature checked (RFC 6008
``header.b`` tells apart two signatures of one domain) or ``domainkeys=`` per
DomainKey-Signature (``header.d`` and ``header.from`` or ``header.sender``, as
RFC 8601 registers them), ``dkim=none`` when
unsigned, ``arc=`` when the message carries an ARC chain (RFC 8617), ``dkim-adsp=``
(the RFC 5617 method name) when ADSP ran.  Incoming
headers that claim our authserv-id are forged or stale and are removed first
(RFC 8601 section 5).
"""
from __future__ import annotations

import re
from typing import List, Optional

import authres
import authres.arc
import authres.dkim_adsp
import authres.dkim_b
from authres.core import AuthenticationResult, AuthenticationResultProperty
from authres.dkim_adsp import DKIMADSPAuthenticationResult

from salmon_dkim.core.canon import remove_fields
from salmon_dkim.core.verifier import VerificationReport

MAX_LINE = 78
_REASON_LIMIT = 120
_PARSER = authres.FeatureContext(authres.dkim_b, authres.dkim_adsp, authres.arc)


def _reason(text) -> str:
    """A reason as a quoted-string authres reads back as written: no quotes or backslashes to escape."""
    return (text or "").replace('"', "'").replace("\\", "/")[:_REASON_LIMIT] or None


_DOMAIN = re.compile(r"[A-Za-z0-9_.-]+")
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9_.-]+")  # dot-atom: authres writes it unquoted


def _domainkeys_properties(r) -> List[AuthenticationResultProperty]:
    """header.d, and header.from or header.sender: the sending address d= was checked against."""
    props = [AuthenticationResultProperty("header", "d", r.domain)] if _DOMAIN.fullmatch(r.domain) else []
    if r.identity_source in ("from", "sender") and r.identity and _ADDRESS.fullmatch(r.identity):
        props.append(AuthenticationResultProperty("header", r.identity_source, r.identity))
    return props


def _dkim_result(r) -> AuthenticationResult:
    if r.type == "domainkeys":
        props = _domainkeys_properties(r)
    else:
        props = [AuthenticationResultProperty("header", name, value)
                 for name, value in (("d", r.domain), ("s", r.selector), ("a", r.algorithm), ("b", r.b))
                 if value and re.fullmatch(r"[\x21-\x7e]+", value)]
    reason = None if r.result == "pass" else _reason(r.reason)
    return AuthenticationResult(r.type, result=r.result, reason=reason,
                                result_comment="test mode key" if r.testing else None, properties=props)


def authentication_results(authserv_id: str, report: VerificationReport) -> str:
    """``Authentication-Results: ID; dkim=...`` with CRLF: one line per result, folded at spaces within 78."""
    results: List = [_dkim_result(r) for r in report.results]
    if not results:
        results.append(AuthenticationResult("dkim", result="none",
                                            reason=_reason(report.unverified_reason)))
    if report.arc:
        results.append(AuthenticationResult("arc", result=report.arc,
                                            reason=None if report.arc == "pass" else _reason(report.arc_reason)))
    if report.adsp:
        results.append(DKIMADSPAuthenticationResult(
            result=report.adsp, header_from=report.author_domain or None,
            reason=None if report.adsp == "pass" else _reason(report.adsp_reason)))
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    clauses = [str(result) for result in header.results]
    lines = [f"{header.HEADER_FIELD_NAME}: {header.authserv_id};"]
    lines += [fold(" " + clause + (";" if i < len(clauses) - 1 else "")) for i, clause in enumerate(clauses)]
    return "\r\n".join(lines) + "\r\n"


def fold(line: str, width: int = MAX_LINE) -> str:
    """Break a header line before spaces so that lines stay within ``width`` where a word allows.

    Folding before an existing space keeps the unfolded text identical, quoted strings included.
    """
    lines, current = [], ""
    for word in re.split(r"(?= )", line):
        if current and len(current) + len(word) > width:
            lines.append(current)
            current = word
        else:
            current += word
    lines.append(current)
    return "\r\n".join(lines)


def parse(header: str):
    """authres's reading of one Authentication-Results header (for tests and tools)."""
    return _PARSER.parse(re.sub(r"\r?\n(?=[ \t])", "", header).rstrip("\r\n"))


_OUTSIDE = re.compile(rb'[ \t\r\n]+|\(|"((?:[^"\\]|\\.)*)"|([^ \t\r\n()";]+)|.', re.DOTALL)
_IN_COMMENT = re.compile(rb"[^()\\]+|\\.|[()]|\\", re.DOTALL)


_SCAN_LIMIT = 16384  # bytes of comments before the authserv-id; beyond that nothing legitimate


def _authserv_id(value: bytes) -> Optional[bytes]:
    """The authserv-id (a token or a quoted-string), after CFWS with nested comments.

    b"" when there is none; None when it is not found within _SCAN_LIMIT bytes (hostile).
    """
    i, depth = 0, 0
    while i < len(value):
        if i > _SCAN_LIMIT:
            return None
        if depth:
            token = _IN_COMMENT.match(value, i).group()
            depth += {b"(": 1, b")": -1}.get(token, 0)
        else:
            found = _OUTSIDE.match(value, i)
            token = found.group()
            if token == b"(":
                depth = 1
            elif found.group(1) is not None:
                return re.sub(rb"\\(.)", rb"\1", found.group(1)).lower()
            elif found.group(2) is not None:
                return found.group(2).lower()
            elif token.strip(b" \t\r\n"):
                return b""
        i += len(token)
    return b""


def remove_ours(message: bytes, authserv_id: str) -> bytes:
    """The message without Authentication-Results headers whose authserv-id is ours.

    Every other byte is kept as it was, line endings included.
    """
    ours = authserv_id.strip().lower().encode("utf-8")
    # None: an id buried under comments, treated as forged
    return remove_fields(message, lambda name, value: name == b"authentication-results"
                         and _authserv_id(value) in (ours, None))


def add_header_on_top(message: bytes, header: str) -> bytes:
    """``header`` (ending in CRLF) put above all others, in the message's own line-ending style."""
    data = header.encode("utf-8")
    if b"\r\n" not in message and b"\n" in message:
        data = data.replace(b"\r\n", b"\n")
    return data + message
