"""Why a signature did not pass: what most likely changed in the message, and what to do about it.

For a failing DKIM signature the body and the header are examined apart (b=
signs the header fields and bh=, so each can be checked without the other):

- body: the canonical body is hashed once, a line at a time, and compared with
  bh= at each line boundary, so a footer added after the signed body shows as
  the longest prefix that still hashes to bh= (and how many bytes and lines
  follow it); else the body is hashed as it was before a relay's usual change
  (white space under simple canonicalization, bare LF line ends, a
  single-part text body in another transfer encoding with the same decoded
  bytes); else it was edited within the signed text.
- header: the usual list and gateway edits are undone (a ``[tag]`` in Subject,
  From rewritten "X via list", Reply-To or another signed field added, an
  extra instance of a signed field, a field re-folded or RFC 2047 re-encoded,
  Content-Transfer-Encoding changed with the body) and b= is verified again
  with the public key: an edit is named as found only when the signature
  verifies with it undone.  What is only a guess says "probably".

Key, DNS, expiry, ``l=`` and local-policy results get plain words and a next
step.  Nothing the sender wrote is echoed: an explanation names fields and
counts bytes, it never quotes a subject or an address.

The work is bounded per signature: a message over :data:`EXPLAIN_MAX_BYTES`
is not explained; at most :data:`MAX_CHECKS` verifications of b= are tried;
the body is canonicalized in a fixed number of linear passes (other transfer
encodings only up to :data:`RE_ENCODE_MAX_BYTES`), and the running hash
compared at no more than :data:`MAX_PREFIX_LINES` line boundaries.
"""
from __future__ import annotations

import base64
import binascii
import email.base64mime
import email.charset
import email.header
import email.quoprimime
import hashlib
import hmac
import itertools
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from salmon_dkim.core import crypto
from salmon_dkim.core.canon import body_hashes, canon_header, canonical_body
from salmon_dkim.core.dkim import SINGLETONS, CheckOptions, Signature, objections, own_field, parse_signature
from salmon_dkim.core.keyfetch import SignatureProblem, fetch_key
from salmon_dkim.core.keys import KeyRecord, KeyRecordError, key_name, parse_key_record
from salmon_dkim.core.message import AddressError, Message, field_name, parse_mailboxes, to_crlf
from salmon_dkim.core.results import SignatureResult
from salmon_dkim.dns.resolver import LookupLimitExceeded, NoRecord, NoSuchDomain, TXTResolver

log = logging.getLogger(__name__)

EXPLAIN_MAX_BYTES = 1 << 20
"""Messages over 1 MiB keep the verifier's plain reason: explaining costs a few passes over the message."""
MAX_CHECKS = 32
"""Verifications of b= tried per signature, the unchanged header included (an RSA-2048 check is ~50 us)."""
MAX_PREFIX_LINES = 20000
"""Line boundaries at which the running body hash is compared with bh= (the last ones, where footers go)."""
RE_ENCODE_MAX_BYTES = 256 << 10
"""Bodies up to 256 KiB are also tried in other transfer encodings (Python's quoted-printable encoder is slow)."""
MAX_REWRITTEN_FIELDS = 64
"""Signed fields examined for re-folding and re-encoding (the first ones in h= order)."""
MAX_COMBINED = 5
"""Rewritten fields whose rewrites are undone in combination (2**5 subsets at most, within MAX_CHECKS)."""
MAX_SIGNED_FIELDS = 1000
"""Signatures whose h= names more fields keep the verifier's plain reason (each is a Python step here)."""
SHORT_LIMIT = 120
"""Characters of the short explanation: reason= in Authentication-Results, and the activity log."""

_FWS = b" \t\r\n"
_SUBJECT_TAG = re.compile(rb"([ \t]*(?:(?:re|fwd?|aw|sv)[ \t]*:[ \t]*)*)\[[^\]\r\n]{1,64}\][ \t]?", re.I)
_QUOTED_TOKEN = re.compile(rb'="([A-Za-z0-9._-]{1,64})"')
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9-]")
_ENCODED_WORD_MAX = 4096  # bytes of a field value examined for RFC 2047 encoded words
LIST_FIELDS = (b"reply-to", b"sender", b"list-id", b"list-post", b"list-help", b"list-subscribe",
               b"list-unsubscribe", b"list-archive", b"list-owner", b"precedence", b"errors-to", b"cc")
"""Fields lists and gateways add: one signed while absent (oversigned) breaks the signature once added."""


@dataclass(frozen=True)
class Explanation:
    """Why one signature got its result: a short line, the findings, and what to do."""

    short: str  # printable ASCII, at most SHORT_LIMIT: the result's reason (Authentication-Results, log)
    detail: str  # what was found, in sentences
    advice: str = ""  # what to do about it
    checks: int = 0  # verifications of b= attempted (the bounded work)
    confirmed: bool = False  # the signature verifies with the changes found undone


def shorten(text: str, limit: int = SHORT_LIMIT) -> str:
    """``text`` on one line of printable ASCII within ``limit`` characters, cut at a word with "..."."""
    text = re.sub(r"[^\x20-\x7e]", "?", " ".join(text.split()))
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 3)
    return text[:cut if cut > limit // 2 else limit - 3].rstrip(" ;,:") + "..."


def _label(name: bytes) -> str:
    """A field name as we print it ("Reply-To"): only the letters, digits and "-" that were sent."""
    lower = name.strip(_FWS).lower()
    if lower in (b"message-id", b"mime-version"):
        return {b"message-id": "Message-ID", b"mime-version": "MIME-Version"}[lower]
    text = _LABEL_CHARS.sub("", lower.decode("ascii", "replace"))[:40] or "(unnamed)"
    return "-".join(part[:1].upper() + part[1:] for part in text.split("-"))


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# --- the body -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _BodyFinding:
    intact: bool
    short: str = ""
    detail: str = ""
    advice: str = ""
    evidence: bool = True  # a hash matched: this is what happened, not a guess
    encoding: Optional[str] = None  # the transfer encoding as signed, when a relay changed it


_INTACT = _BodyFinding(True)
_LIST_ADVICE = ("A mailing list changed the post, which breaks the author's signature (nothing is wrong with the "
                "signer): the list should sign posts as its own domain and ARC-seal them ([DomainKeys] SignListMail, "
                "ARCSeal); judge list mail by the list's signature or seal.")


def _line_ends(piece: bytes, after_cr: bool, pos: int = 0) -> Iterator[int]:
    """Offsets in ``piece`` just after each CRLF from ``pos`` on (one may straddle from the piece before)."""
    if pos == 0 and after_cr and piece[:1] == b"\n":
        yield 1
    at = piece.find(b"\r\n", pos)
    while at >= 0:
        yield at + 2
        at = piece.find(b"\r\n", at + 2)


def _uncompared(piece: bytes, skip: int) -> Tuple[int, int]:
    """(offset, boundaries) of ``piece``'s head holding its first ``skip`` line boundaries (all it has if
    fewer), found from the end, so that only the boundaries after it cost a step each."""
    count = piece.count(b"\r\n")
    if count <= skip:
        return len(piece), count
    at = len(piece)
    for _ in range(count - skip + 1):  # back over the boundaries compared, to the end of the last one not
        at = piece.rfind(b"\r\n", 0, at)
    return at + 2, skip


def signed_prefix(message: Message, sig: Signature) -> Tuple[Optional[Tuple[int, int]], int, int]:
    """((bytes, lines) of the longest canonical body prefix that hashes to bh=, or None), total bytes, lines.

    One pass: the canonical body is hashed as it streams by, and at each of its last
    :data:`MAX_PREFIX_LINES` line boundaries a copy of the running hash is compared with bh=.
    """
    data, start = message.data, message.body_offset
    first_compared = data.count(b"\r\n", start) - MAX_PREFIX_LINES  # a canonical line is a received line
    hasher = hashlib.new(sig.hash_name)
    found = (0, 0) if hmac.compare_digest(hasher.digest(), sig.body_hash) else None
    total = lines = 0
    after_cr = False
    for view in canonical_body(data, sig.body_canon, start):
        piece = bytes(view)
        pos = 0
        if lines < first_compared and not (after_cr and piece[:1] == b"\n"):
            pos, skipped = _uncompared(piece, first_compared - lines)
            hasher.update(piece[:pos])
            lines += skipped
        for end in _line_ends(piece, after_cr, pos):
            hasher.update(piece[pos:end])
            pos = end
            lines += 1
            if lines > first_compared and hmac.compare_digest(hasher.copy().digest(), sig.body_hash):
                found = (total + end, lines)
        hasher.update(piece[pos:])
        total += len(piece)
        after_cr = piece.endswith(b"\r")
    return found, total, lines


def _digest_matches(sig: Signature, body: bytes, method: str) -> bool:
    digests = body_hashes(body, method, [(sig.hash_name, sig.length)])
    if sig.length is not None and int.from_bytes(digests[("length", None)], "big") < sig.length:
        return False
    return hmac.compare_digest(digests[(sig.hash_name, sig.length)], sig.body_hash)


def _text_encoding(message: Message) -> Optional[bytes]:
    """The transfer encoding (lower case) of a message whose body is a single text part, else None."""
    types = message.values(b"content-type")
    encodings = message.values(b"content-transfer-encoding")
    if len(types) > 1 or len(encodings) > 1:
        return None
    media = types[0].split(b";", 1)[0].strip(_FWS).lower() if types else b"text/plain"
    if not media.startswith(b"text/"):
        return None
    return encodings[0].strip(_FWS).lower()[:40] if encodings else b"7bit"


def _decoded_body(body: bytes, encoding: bytes) -> Optional[bytes]:
    try:
        if encoding == b"quoted-printable":
            return binascii.a2b_qp(body)
        if encoding == b"base64":
            return base64.b64decode(body)  # line ends and other non-alphabet bytes are skipped
    except (binascii.Error, ValueError):
        return None
    return body if encoding in (b"7bit", b"8bit", b"binary") else None


def _encoded_bodies(content: bytes) -> Iterator[Tuple[str, bytes]]:
    """The decoded body ``content`` (CRLF) as common encoders write it in each transfer encoding."""
    yield ("7bit" if content.isascii() else "8bit"), content
    lf = content.replace(b"\r\n", b"\n")
    for width in (76, 78):  # RFC 2045's limit, and Python's email (policy.max_line_length)
        encoded = email.quoprimime.body_encode(lf.decode("latin-1"), width)
        yield "quoted-printable", to_crlf(encoded.encode("latin-1"))
    for text in (lf, content):  # the line ends inside the encoded text as the encoder had them
        yield "base64", to_crlf(email.base64mime.body_encode(text).encode("ascii"))


def _appended(added: int, added_lines: int, prefix: Tuple[int, int], listy: bool) -> _BodyFinding:
    what = "a list footer" if listy else "a footer or disclaimer"
    return _BodyFinding(
        False, f"{added} bytes added after the signed body ({what})",
        f"The first {prefix[0]} bytes ({_count(prefix[1], 'line')}) of the canonical body still hash to bh=: "
        f"the signed body is intact, and {added} bytes in {_count(added_lines, 'line')} were added after it, "
        f"as {what} is.",
        _LIST_ADVICE if listy else "Nothing is wrong with the signer. A gateway that adds a footer or disclaimer "
        "should add it before signing, or sign or ARC-seal after it; judge such mail by that signature or seal.")


def _body(message: Message, sig: Signature) -> _BodyFinding:
    """What happened to the body: intact, added to, white space, line ends, encoding, cut, or edited."""
    if sig.length is None:
        prefix, total, lines = signed_prefix(message, sig)
        if prefix == (total, lines):
            return _INTACT
        if prefix is not None:
            return _appended(total - prefix[0], lines - prefix[1], prefix, bool(message.count(b"list-id")))
    else:
        digests = body_hashes(message.data, sig.body_canon, [(sig.hash_name, sig.length)], message.body_offset)
        total = int.from_bytes(digests[("length", None)], "big")
        if total < sig.length:
            return _BodyFinding(  # the short line is the verifier's: "l=N is longer than the body ..."
                False, "",
                f"The signature covers the first {sig.length} bytes of the canonical body (l=), but the body "
                f"has {total}: it was cut short after signing.",
                "Ask the sender to send the message again; look for a relay on the path that truncates mail.")
        if hmac.compare_digest(digests[(sig.hash_name, sig.length)], sig.body_hash):
            return _INTACT
    body = bytes(message.body)
    if sig.body_canon == "simple":
        trimmed = b"\r\n".join(line.rstrip(b" \t") for line in body.split(b"\r\n"))
        if _digest_matches(sig, body, "relaxed") or _digest_matches(sig, trimmed, "simple"):
            return _BodyFinding(
                False, "white space changed in the body (c=simple)",
                "The body hashes to bh= once white space at line ends and runs of spaces are disregarded: a "
                "relay changed white space, which simple body canonicalization does not survive.",
                "Ask the sender to sign with relaxed canonicalization (c=relaxed/relaxed), which survives it; "
                "a relay that pads or trims lines should be fixed.")
    if b"\r\n" in body and _digest_matches(sig, body.replace(b"\r\n", b"\n"), sig.body_canon):
        return _BodyFinding(
            False, "line endings changed: the signer hashed bare LF line ends",
            "The body hashes to bh= with bare LF line ends: the signer hashed the message before its line ends "
            "became CRLF, as they are in every message sent (RFC 5322), so this signature verifies nowhere.",
            "The sender's signing software must hash the message with CRLF line endings: tell their postmaster.")
    encoding = _text_encoding(message) if len(body) <= RE_ENCODE_MAX_BYTES else None
    content = _decoded_body(body, encoding) if encoding else None
    if content is not None:
        now = encoding.decode("ascii", "replace")
        for was, candidate in _encoded_bodies(to_crlf(content)):
            if candidate != body and _digest_matches(sig, candidate, sig.body_canon):
                change = f"from {was} to {now}" if was != now else f"({was} written anew)"
                return _BodyFinding(
                    False, f"transfer encoding changed {change}, same text",
                    f"The body decodes to the bytes that were signed, but its transfer encoding was changed "
                    f"{change}: a relay converted it (an 8BITMIME downgrade, or a filter that re-wrote the message).",
                    "Relays on the path should pass the body as it is (accept 8BITMIME, do not re-encode); the "
                    "sender can send bodies as 7-bit quoted-printable, which no relay needs to convert.",
                    encoding=was)
    return _BodyFinding(
        False, "the body was edited within the signed text",
        "The body does not hash to bh= as received, without text added at its end, with its white space or "
        "line ends as signed, or in another transfer encoding: its signed text itself was changed (a gateway "
        "rewrote links or put a disclaimer inside the text, a MIME part was added, or it was tampered with).",
        "Find the gateway on the path (the Received fields) that changes message text: it should verify before "
        "its change and sign or ARC-seal after it. Do not take the text as the signer's.", evidence=False)


# --- the header -----------------------------------------------------------------------------------

Edits = Dict[int, Optional[bytes]]
"""Changes to the header: index in ``Message.fields`` -> the value as it was signed, or None (field added)."""


@dataclass
class _Candidate:
    edits: Edits
    said: List[str]  # each change undone, in words (no sender text)
    advice: str = ""
    own: Optional[bytes] = None  # the signature field's own value as signed, when it was re-folded
    kind: str = ""  # "list" or "gateway": an edit tried together with the others of its kind


class _HeaderCheck:
    """b= verified over the signed header fields with edits undone, each verification counted."""

    def __init__(self, message: Message, sig: Signature, public_key, budget: int) -> None:
        self.message, self.sig, self.key, self.budget = message, sig, public_key, budget
        self.fields = message.fields
        self.method = sig.header_canon
        self.checks = 0
        self.unusable: Optional[str] = None  # why b= cannot be a signature by this key at all
        self.slots_of: Dict[bytes, List[int]] = {}
        for slot, name in enumerate(sig.signed_headers):
            self.slots_of.setdefault(field_name(name.strip(_FWS)), []).append(slot)
        self.chosen = self._choose({}, self.slots_of)
        self.pieces = [self._canon(i) for i in self.chosen]
        self.own = own_field(sig.name, sig.value, self.method)

    def _choose(self, removed: Edits, names) -> List[Optional[int]]:
        """For each h= entry, the field it signs (None: no instance left): for each name the instances
        from the bottom up, as select_headers picks them (RFC 6376 section 5.4.2); only ``names`` redone."""
        chosen = list(self.chosen) if removed else [None] * len(self.sig.signed_headers)
        for name in names:
            left = [i for i in self.message.positions(name) if i not in removed]
            for slot in self.slots_of.get(name, ()):
                chosen[slot] = left.pop() if left else None
        return chosen

    def _canon(self, index: Optional[int], value: Optional[bytes] = None) -> bytes:
        if index is None:
            return b""
        name, received = self.fields[index]
        return canon_header(name, received if value is None else value, self.method)

    @property
    def spent(self) -> bool:
        return self.checks >= self.budget or self.unusable is not None

    def signed_index(self, name: bytes) -> Optional[int]:
        """The field the first h= entry for ``name`` signs (the bottom-most instance), or None."""
        slots = self.slots_of.get(name)
        return self.chosen[slots[0]] if slots else None

    def verifies(self, edits: Edits, own: Optional[bytes] = None) -> bool:
        """Whether b= verifies with ``edits`` undone (False, unchecked, once the budget is spent)."""
        if self.spent:
            return False
        self.checks += 1
        chosen, pieces = self.chosen, self.pieces
        removed = {i: None for i, v in edits.items() if v is None}
        if removed:
            names = {field_name(self.fields[i][0]) for i in removed}
            chosen = self._choose(removed, [n for n in names if n in self.slots_of])
            pieces = [p if c == was else self._canon(c) for p, c, was in zip(pieces, chosen, self.chosen)]
        if len(removed) < len(edits):
            pieces = [self._canon(c, edits[c]) if c in edits else p for p, c in zip(pieces, chosen)]
        signed_self = self.own if own is None else own_field(self.sig.name, own, self.method)
        try:
            crypto.verify(self.key, self.sig.algorithm, self.sig.signature, b"".join(pieces) + signed_self)
        except crypto.BadSignature as exc:
            if str(exc) != "signature mismatch":  # the wrong length: no edit can help
                self.unusable = str(exc)
            return False
        return True


def _unfolded(value: bytes) -> bytes:
    """A field value without its folding (the CRLF that ends it kept)."""
    return value[:-2].replace(b"\r\n", b"") + b"\r\n" if value.endswith(b"\r\n") else value.replace(b"\r\n", b"")


def _next_from(find: Callable[[int], int]) -> Callable[[int], int]:
    """``find(pos)`` (first match at or after ``pos``, or -1) with each answer reused while it holds, so
    that searches from growing positions read each byte once."""
    last = [float("inf"), -1]  # searched from, found at

    def at_or_after(pos: int) -> int:
        if pos >= last[0] and (last[1] >= pos or last[1] == -1):
            return last[1]
        last[:] = [pos, find(pos)]
        return last[1]
    return at_or_after


_WSP_BYTE = re.compile(rb"[ \t\r\n]")


def decode_encoded_words(value: bytes) -> Optional[bytes]:
    """``value`` with its RFC 2047 encoded words as the raw bytes they encode, or None when it has none.

    White space between two encoded words goes (RFC 2047 section 6.2); all else is kept as it
    was (email.header.decode_header drops white space around words).  One forward scan.
    """
    close = _next_from(lambda pos: value.find(b"?=", pos))
    space = _next_from(lambda pos: (lambda m: m.start() if m else -1)(_WSP_BYTE.search(value, pos)))
    out: List[bytes] = []
    copied = scan = 0  # value[:copied] is in out; the next "=?" is looked for from scan
    after_word = False
    while True:
        start = value.find(b"=?", scan)
        mark = value.find(b"?", start + 2) if start >= 0 else -1
        if mark < 0:
            break
        kind, charset = value[mark + 1:mark + 3].lower(), value[start + 2:mark]
        word = kind in (b"q?", b"b?") and 0 < len(charset) <= 40 and not _WSP_BYTE.search(charset)
        end = close(mark + 3) if word else -2
        if end == -1:
            break  # no "?=" left: no word can end
        blank = space(mark + 3) if word else -2
        raw = None
        if word and not -1 < blank < end:
            payload = value[mark + 3:end]
            try:
                raw = binascii.a2b_qp(payload, header=True) if kind == b"q?" else \
                    base64.b64decode(payload + b"=" * (-len(payload) % 4))
            except (binascii.Error, ValueError):
                raw = None
        if raw is None:  # not an encoded word: look again after its "=?"
            scan = start + 2
            continue
        gap = value[copied:start]
        if not (after_word and not gap.strip(_FWS)):
            out.append(gap)
        out.append(raw)
        copied = scan = end + 2
        after_word = True
    if not after_word:
        return None
    return b"".join(out) + value[copied:]


def _encoded_words(value: bytes) -> Iterator[bytes]:
    """A raw 8-bit field value as RFC 2047 encoded words, as mail libraries write them (Q, then B)."""
    try:
        text = _unfolded(value)[:-2].decode("utf-8").strip(" \t")
    except UnicodeDecodeError:
        return
    for encoding in (email.charset.QP, email.charset.BASE64):
        charset = email.charset.Charset("utf-8")
        charset.header_encoding = encoding
        words = email.header.Header(text, charset, header_name="Subject").encode(maxlinelen=76)
        yield b" " + words.replace("\n", "\r\n").encode("ascii") + b"\r\n"


def _tag_stripped(value: bytes) -> Optional[bytes]:
    """A Subject value without a leading list tag ("[lunch] Hi" -> "Hi", "Re: [lunch] Hi" -> "Re: Hi")."""
    found = _SUBJECT_TAG.match(value, 0, 256)
    return found.group(1) + value[found.end():] if found else None


def _munged_name(value: bytes) -> Optional[str]:
    """The author's name in a From rewritten as "Name via List" <list@...>, else None."""
    angle = value.find(b"<", 0, 1024)
    head = value[:angle].replace(b"\t", b" ").lower() if angle > 0 else b""
    via = head.find(b" via ")
    return value[:via].strip(b" \t\r\n\"").decode("utf-8", "replace") if via > 0 else None


def _first_address(value: bytes) -> Optional[str]:
    try:
        boxes = parse_mailboxes(value)
    except AddressError:
        return None
    return boxes[0].address if boxes else None


_GATEWAY_ADVICE = ("A gateway or mail library re-wrote header fields (re-folded or re-encoded them) on the way: "
                   "it should pass fields through as they are, or verify before and sign after it. Relaxed header "
                   "canonicalization (c=relaxed/...) survives re-folding, not re-encoding.")
_ADDED_ADVICE = ("A relay added the field after signing: it should leave signed mail as it is, or sign after its "
                 "change.")


def _subject_tag(check: _HeaderCheck) -> List[_Candidate]:
    subject = check.signed_index(b"subject")
    stripped = _tag_stripped(check.fields[subject][1]) if subject is not None else None
    return [_Candidate({subject: stripped}, ["a [tag] was added to Subject"], _LIST_ADVICE)] if stripped else []


def _from_rewritten(check: _HeaderCheck) -> List[_Candidate]:
    """From restored from X-Original-From, Reply-To or Cc (without the Reply-To or Cc the list added, too)."""
    author = check.signed_index(b"from")
    if author is None:
        return []
    name = _munged_name(check.fields[author][1])
    if name is None and not check.message.count(b"x-original-from"):
        return []
    said = "From was rewritten to the list's address"
    found = []
    for source in (b"x-original-from", b"reply-to", b"cc"):
        positions = check.message.positions(source)
        if not positions:
            continue
        where, value = positions[-1], check.fields[positions[-1]][1]
        address = _first_address(value)
        forms = [value] + ([f" {name} <{address}>\r\n".encode(), f' "{name}" <{address}>\r\n'.encode(),
                            f" {address}\r\n".encode()] if address and name else [])
        for form in dict.fromkeys(forms):
            if source in check.slots_of:  # a signed Reply-To or Cc the list added with the author's address
                found.append(_Candidate({author: form, where: None},
                                        [said, f"{_label(source)} was added with the author's address"],
                                        _LIST_ADVICE))
            found.append(_Candidate({author: form}, [said], _LIST_ADVICE))
    return found


def _added_fields(check: _HeaderCheck, listy: bool) -> List[_Candidate]:
    """A signed field added: an extra instance above or below the signed one, or a list's field."""
    found = []
    for name in SINGLETONS + tuple(n for n in check.slots_of if n not in SINGLETONS):
        positions = check.message.positions(name)
        if name not in check.slots_of or not positions:
            continue
        label = _label(name)
        if len(positions) > 1:
            found.append(_Candidate({positions[0]: None}, [f"an extra {label} field was added above the signed one"],
                                    f"A mail program shows the top {label}, which the signature does not cover: "
                                    f"treat the message as forged unless a gateway you trust added it."))
            found.append(_Candidate({positions[-1]: None}, [f"an extra {label} field was added below the signed one"],
                                    _LIST_ADVICE if listy else _ADDED_ADVICE))
        elif name in LIST_FIELDS:
            found.append(_Candidate({positions[0]: None}, [f"{label} was added"],
                                    _LIST_ADVICE if listy else _ADDED_ADVICE, kind="list"))
    return found


def _rewritten_fields(check: _HeaderCheck) -> Iterator[_Candidate]:
    """Each signed field re-encoded (RFC 2047 either way), parameters re-quoted, or (c=simple) re-folded."""
    indexes = list(dict.fromkeys(i for i in check.chosen if i is not None))[:MAX_REWRITTEN_FIELDS]
    for index in indexes:
        name, value = check.fields[index]
        label = _label(name)
        if len(value) > _ENCODED_WORD_MAX:
            continue
        decoded = decode_encoded_words(value) if b"=?" in value else None
        if decoded is not None and decoded != value:
            yield _Candidate({index: decoded}, [f"{label} was re-encoded (RFC 2047)"],
                             _GATEWAY_ADVICE, kind="gateway")
            if check.method == "simple" and b"\r\n" in decoded[:-2]:
                yield _Candidate({index: _unfolded(decoded)}, [f"{label} was re-encoded and re-folded"],
                                 _GATEWAY_ADVICE, kind="gateway")
        elif check.method == "simple" and b"\r\n" in value[:-2]:
            yield _Candidate({index: _unfolded(value)}, [f"{label} was re-folded"], _GATEWAY_ADVICE, kind="gateway")
        unquoted = _QUOTED_TOKEN.sub(rb"=\1", value) if b'="' in value else value
        if unquoted != value:
            yield _Candidate({index: unquoted}, [f"{label} was re-written (quoting)"],
                             _GATEWAY_ADVICE, kind="gateway")
        if not value.isascii():
            for encoded in _encoded_words(value):
                yield _Candidate({index: encoded}, [f"{label} was decoded from RFC 2047"],
                                 _GATEWAY_ADVICE)
    if check.method == "simple" and b"\r\n" in check.sig.value[:-2]:
        yield _Candidate({}, ["the DKIM-Signature field itself was re-folded"], _GATEWAY_ADVICE,
                         _unfolded(check.sig.value), kind="gateway")


def _merged(parts: Sequence[_Candidate], advice: str) -> _Candidate:
    edits: Edits = {}
    said: List[str] = []
    own = None
    for part in parts:
        edits.update(part.edits)
        said += part.said
        own = part.own or own
    return _Candidate(edits, list(dict.fromkeys(said)), advice, own)


def _candidates(check: _HeaderCheck, body: _BodyFinding) -> Iterator[_Candidate]:
    """Edits to undo, most likely first, then the likely ones together; each costs one verification."""
    listy = bool(check.message.count(b"list-id") or check.message.count(b"list-post"))
    tag, author, added = _subject_tag(check), _from_rewritten(check), _added_fields(check, listy)
    yield from tag
    yield from author
    yield from added
    # A list makes several changes at once: the tag, From, and each of its fields that was oversigned.
    together = tag[:1] + author[:1] + [c for c in added if c.kind == "list"
                                       and not any(set(c.edits) & set(a.edits) for a in author[:1])]
    if len(together) > 1:
        yield _merged(together, _LIST_ADVICE)
    # A gateway re-writes each field it touches, and the transfer encoding with the body: the fields'
    # first rewrites together (all of them first, then fewer), with the encoding as signed.
    pool: Dict[int, _Candidate] = {}
    for candidate in _rewritten_fields(check):
        yield candidate
        if candidate.kind == "gateway":
            pool.setdefault(next(iter(candidate.edits), -1), candidate)
    rewritten = list(pool.values())[:MAX_COMBINED]
    cte = check.signed_index(b"content-transfer-encoding")
    encoding = [_Candidate({cte: f" {body.encoding}\r\n".encode("ascii")},
                           ["Content-Transfer-Encoding was changed"])] \
        if body.encoding and cte is not None else []
    for size in range(len(rewritten), -1 if encoding else 1, -1):  # the encoding alone too
        for subset in itertools.combinations(rewritten, size):
            yield _merged(list(subset) + encoding, _GATEWAY_ADVICE)
    if together and rewritten:
        yield _merged(together + rewritten, _LIST_ADVICE)


def _header(check: _HeaderCheck, body: _BodyFinding) -> Optional[_Candidate]:
    """The edits that make b= verify once undone, or None (after the unchanged header failed)."""
    for candidate in _candidates(check, body):
        if check.spent:
            return None
        if check.verifies(candidate.edits, candidate.own):
            return candidate
    return None


# --- a failing signature --------------------------------------------------------------------------

def explain_failure(message: Message, sig: Signature, record: KeyRecord, reason: str) -> Explanation:
    """Why ``sig`` got ``fail`` with the key ``record``: what changed in the body and the header fields.

    ``reason`` is the verifier's own reason, kept when the message is over :data:`EXPLAIN_MAX_BYTES`
    or nothing better is found.  Never raises: a bug here costs the explanation, not the result.
    """
    if len(message.data) > EXPLAIN_MAX_BYTES:
        return Explanation(reason, f"{reason}. Not explained: the message is {len(message.data)} bytes, over "
                                   f"the {EXPLAIN_MAX_BYTES} bytes explained.")
    if len(sig.signed_headers) > MAX_SIGNED_FIELDS:
        return Explanation(reason, f"{reason}. Not explained: h= names {len(sig.signed_headers)} fields, over "
                                   f"the {MAX_SIGNED_FIELDS} explained.")
    try:
        return _explain_failure(message, sig, record, reason)
    except Exception:  # noqa: BLE001 (the explanation is an extra: its bug must not cost the result)
        log.exception("explaining the failed DKIM signature d=%s s=%s", sig.domain, sig.selector)
        return Explanation(reason, reason)


def _explain_failure(message: Message, sig: Signature, record: KeyRecord, reason: str) -> Explanation:
    name = key_name(sig.selector, sig.domain)
    check = _HeaderCheck(message, sig, record.public_key(), MAX_CHECKS)
    as_is = check.verifies({})
    if check.unusable:
        return Explanation(
            shorten(reason), f"{check.unusable}: the key published at {name} is not the key that made this signature.",
            f"The sender changed keys without keeping the old selector published, or signs with a selector whose "
            f"record holds another key: the domain owner should run salmon-dkim check-dns {sig.domain} "
            f"{sig.selector} against the signing key.", check.checks)
    body = _body(message, sig)
    fixed = _Candidate({}, []) if as_is else _header(check, body)
    short: List[str] = []
    detail: List[str] = []
    advice: List[str] = []
    if not body.intact:
        short.append("body hash mismatch: " + body.short if body.short else reason)
        detail.append(body.detail)
        advice.append(body.advice)
    if fixed is None:
        subject = check.signed_index(b"subject")
        tagged = subject is not None and _tag_stripped(check.fields[subject][1]) is not None
        guess = ("Subject probably got a [tag], and something else changed too" if tagged
                 else "a signed header field was changed")
        short.append(("; " if short else "signature mismatch: ") + guess + ", or the key does not match")
        detail.append(f"In the header, {guess}: b= does not verify over the signed fields, and undoing the usual "
                      f"list and gateway edits ({check.checks} checks) does not make it verify. Else the key at "
                      f"{name} is not the key that signed.")
        advice.append(f"Compare with the sender's copy to see which field changed; if none did, the domain owner "
                      f"should check the key with salmon-dkim check-dns {sig.domain} {sig.selector}.")
    elif fixed.said:
        said = "; ".join(fixed.said)
        short.append(("; " if short else "signature mismatch: ") + said)
        detail.append(f"In the header, {said}: with {'that' if len(fixed.said) == 1 else 'those'} undone the "
                      f"signature verifies with the key at {name} (checked, not guessed).")
        advice.append(fixed.advice)
    if not short:  # body and header both verify: the failure is not one we can see here
        return Explanation(reason, reason, checks=check.checks)
    return Explanation(shorten("".join(short)), " ".join(detail), " ".join(dict.fromkeys(a for a in advice if a)),
                       check.checks, fixed is not None and body.evidence)


# --- every result ---------------------------------------------------------------------------------

def _signature_field(message: Message, result: SignatureResult, position: Optional[int]):
    if position is not None:
        return message.fields[position]
    wanted = b"b=" + result.b.encode("ascii", "replace")
    for name, value in message.fields:  # the field whose b= starts as the result's header.b does
        if field_name(name) == b"dkim-signature" and result.b and \
                any(tag.startswith(wanted) for tag in value.translate(None, _FWS).split(b";")):
            return name, value
    return None


def _ago(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return _count(seconds // size, unit)
    return _count(seconds, "second")


def _when(stamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))


def _expired(sig: Signature, now: int) -> Explanation:
    lifetime = f", {_ago(sig.expiry - sig.timestamp)} after it was signed (t=)" if sig.timestamp else ""
    return Explanation(
        shorten(f"signature expired {_ago(now - sig.expiry)} ago (x=)"),
        f"The signature says it is good until {_when(sig.expiry)} (x={sig.expiry}){lifetime}; it is now "
        f"{_ago(now - sig.expiry)} later.",
        "If the message just arrived, the signer's expiry is too short for mail that can be delayed: it should "
        "give days (x= a week after t=), or no x= at all. If you are checking an old message again, expiry is "
        "expected: signatures are for checking on arrival.")


def _key_problem(sig: Signature, problem: SignatureProblem, seen: List[KeyRecord]) -> Explanation:
    name = key_name(sig.selector, sig.domain)
    cause = problem.__context__  # fetch_key raises "from None": the DNS or record error is kept here
    short, detail, advice = problem.reason, problem.reason, ""
    if isinstance(cause, LookupLimitExceeded):
        short = f"key at {name} not looked up: DNS lookup limit for this message reached"
        advice = ("The message has more signatures than [DNS] MaxLookupsPerMessage lets us look up: raise it if "
                  "legitimate mail carries that many.")
    elif isinstance(cause, NoRecord):
        short = f"no key at {name}: removed or never published, or wrong selector"
        how = "no such name" if isinstance(cause, NoSuchDomain) else "no TXT record"
        detail = (f"DNS says there is no key at {name} ({how}): the key was removed or never published, or "
                  f"the signer uses a selector (s={sig.selector}) that was never published.")
        advice = (f"The domain owner of {sig.domain} should publish the key at {name} (salmon-dkim dns-record "
                  f"prints it; check-dns checks it), or fix the signer's selector. A key removed on rotation "
                  f"should stay published until mail signed with it has been delivered.")
    elif problem.result == "temperror":
        short = f"key at {name} not fetched: DNS failed for now"
        detail = f"The lookup of {name} failed for now ({cause or problem.reason}): a timeout or a SERVFAIL."
        advice = ("Temporary: the sending server retries and the signature is checked again. If it persists, the "
                  f"name servers of {sig.domain} are broken: tell its owner.")
    elif isinstance(cause, KeyRecordError):
        short = f"key record at {name} is malformed" + (f" ({cause.tag}=)" if cause.tag else "")
        detail = f"The TXT record at {name} is not a usable DKIM key record: {cause}."
        advice = (f"The domain owner of {sig.domain} must publish a correct record (salmon-dkim dns-record prints "
                  f"one, check-dns checks it).")
    elif seen and seen[-1].revoked:
        short = f"key at {name} was revoked (p= empty)"
        detail = f"The record at {name} has an empty p=: the domain owner revoked the key."
        advice = ("Mail signed with a revoked key cannot verify; if the message is new, the sender still signs with "
                  "the old key and must switch to the current one.")
    elif not seen:
        short = f"key at {name} is ambiguous: more than one TXT record"
        advice = f"The domain owner of {sig.domain} must keep exactly one TXT record at {name}."
    return Explanation(shorten(short), detail, advice)


def _policy(message: Message, sig: Signature, record: KeyRecord, result: SignatureResult, settings,
            now: int) -> Explanation:
    """A signature that verified but is refused: each local rule it broke, and what to do."""
    options = settings.verification
    length = int.from_bytes(body_hashes(message.data, sig.body_canon, [], message.body_offset)[("length", None)],
                            "big")
    found = objections(sig, record, message, CheckOptions(options.min_key_bits, options.allow_sha1,
                       options.honor_body_length, options.clock_drift), body_length=length, now=now)
    advice = []
    detail = [f"The signature verified, but local policy refuses it: {'; '.join(found) or result.reason}."]
    if sig.length is not None and sig.length < length:
        detail.append(f"It covers only the first {sig.length} bytes of the body (l=); the {length - sig.length} "
                      f"bytes after them (a list footer, or anything at all) are not signed.")
        advice.append("Accept such mail with [Verification] HonorBodyLength = Yes, or ask the signer to stop using "
                      "l=, which lets anyone add text to a signed message.")
    if sig.hash_name == "sha1" and not options.allow_sha1:
        advice.append("rsa-sha1 is no longer safe (RFC 8301): the signer must use rsa-sha256.")
    if sig.key_type == "rsa" and record.bits() < options.min_key_bits:
        advice.append(f"The signer must publish and use a longer key (2048 bits); [Verification] MinKeyBits sets "
                      f"the minimum here.")
    if any("an unsigned one was added" in f or "From fields" in f for f in found):
        advice.append("A field a mail program shows was added above the signed one: treat the message as forged "
                      "unless a gateway you trust added it.")
    return Explanation(result.reason, " ".join(detail), " ".join(advice) or "See the reason.")


def explain(message: Message, result: SignatureResult, resolver: TXTResolver, settings, *,
            position: Optional[int] = None, now: Optional[int] = None) -> Explanation:
    """Why ``result`` (the verifier's, for the signature field at ``position`` of ``message``) is what it is.

    A failure gets :func:`explain_failure`; key, DNS, expiry and policy results plain words and a
    next step.  ``position``: the index of the signature field in ``message.fields`` (found by its
    b= when not given).  ``now`` for tests.  DomainKeys results keep the verifier's reason.
    """
    if result.type != "dkim" or result.result == "pass":
        return Explanation(result.reason, result.reason)
    found = _signature_field(message, result, position)
    if found is None:
        return Explanation(result.reason, result.reason)
    try:
        sig = parse_signature(*found)
    except SignatureProblem as problem:
        return Explanation(shorten(problem.reason), f"The DKIM-Signature field is broken: {problem.reason}.",
                           "It counts as no signature. The signer's software wrote it wrongly, or a relay damaged "
                           "it: tell the sender's postmaster.")
    now = int(time.time()) if now is None else now
    if sig.expiry is not None and now > sig.expiry + settings.verification.clock_drift:
        return _expired(sig, now)
    seen: List[KeyRecord] = []

    def parse(selector: str, domain: str, txt: bytes) -> KeyRecord:
        seen.append(parse_key_record(txt))
        return seen[-1]

    try:
        record, _ = fetch_key(sig.selector, sig.domain, resolver, parse,
                              lookup_limit=settings.dns.max_lookups_per_message)
    except SignatureProblem as problem:
        return _key_problem(sig, problem, seen)
    name = key_name(sig.selector, sig.domain)
    if record.key_type != sig.key_type:
        return Explanation(shorten(f"key at {name} is {record.key_type}, the signature {sig.algorithm}"),
                           f"The key at {name} is k={record.key_type}, which cannot check a={sig.algorithm}.",
                           "The signer uses the selector of another key: it must sign with the key published "
                           "under the selector it names.")
    if result.result == "fail":
        return explain_failure(message, sig, record, result.reason)
    if result.result == "policy":
        return _policy(message, sig, record, result, settings, now)
    return Explanation(result.reason, result.reason)
