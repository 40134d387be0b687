"""Canonicalization (RFC 6376 section 3.4, RFC 4870 section 3.4): dkimpy is the reference."""
import hashlib
import random

import pytest
from dkim.canonicalization import Relaxed, Simple

from salmon_dkim.core.canon import body_hash, body_hashes, canon_body, canon_header, canonical_body
from salmon_dkim.core.dkim import select_headers
from salmon_dkim.core.message import Message, to_crlf


@pytest.mark.parametrize("body, relaxed, simple", [
    (b"", b"", b"\r\n"),
    (b"\r\n\r\n\r\n", b"", b"\r\n"),
    (b"Hi  there \t\r\n", b"Hi there\r\n", b"Hi  there \t\r\n"),
    (b"a\r\n \r\n\t\r\n", b"a\r\n", b"a\r\n \r\n\t\r\n"),
    (b"a\r\n\r\nb\r\n\r\n", b"a\r\n\r\nb\r\n", b"a\r\n\r\nb\r\n"),
    (b"no final line end", b"no final line end\r\n", b"no final line end\r\n"),
    (b"trailing blank  ", b"trailing blank\r\n", b"trailing blank  \r\n"),
])
def test_body_canonicalization_examples(body, relaxed, simple):
    assert canon_body(body, "relaxed") == relaxed
    assert canon_body(body, "simple") == simple


def test_body_canonicalization_agrees_with_dkimpy_on_crlf_terminated_bodies():
    rng = random.Random(6376)
    for _ in range(5000):
        body = to_crlf(bytes(rng.choice(b"ab \t\r\n") for _ in range(rng.randint(0, 16))))
        if body and not body.endswith(b"\r\n"):
            body += b"\r\n"
        assert canon_body(body, "relaxed") == Relaxed.canonicalize_body(body), body
        assert canon_body(body, "simple") == Simple.canonicalize_body(body), body


def test_relaxed_agrees_with_dkimpy_on_prose_and_on_dense_white_space():
    """Prose (few runs of spaces) and dense white space take different paths through the relaxed rules."""
    rng = random.Random(5322)
    for _ in range(600):
        prose = bytes(rng.choice(b"abcdefgh ") for _ in range(rng.randint(0, 3000)))
        tail = to_crlf(bytes(rng.choice(b"ab  \t\r\n") for _ in range(rng.randint(0, 40))))
        body = (prose + tail) if rng.random() < 0.5 else (tail + prose)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        assert canon_body(body, "relaxed") == Relaxed.canonicalize_body(body), body[-60:]


def test_a_million_empty_lines_collapse():
    assert canon_body(b"x\r\n" + b"\r\n" * 1_000_000, "relaxed") == b"x\r\n"


def test_relaxed_header_unfolds_and_compresses():
    assert canon_header(b"Subject ", b" a \t b\r\n  c  \r\n", "relaxed") == b"subject:a b c\r\n"
    assert canon_header(b"Subject", b" a \t b\r\n", "simple") == b"Subject: a \t b\r\n"


def test_header_canonicalization_agrees_with_dkimpy_on_random_fields():
    rng = random.Random(8601)
    for _ in range(3000):
        value = bytes(rng.choice(b"ab \t") for _ in range(rng.randint(0, 12)))
        folds = [bytes(rng.choice(b"ab \t") for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(0, 2))]
        value += b"".join(b"\r\n" + rng.choice([b" ", b"\t"]) + fold for fold in folds) + b"\r\n"
        name = rng.choice([b"Subject", b"X-Test ", b"from"])
        assert Message(name + b":" + value + b"\r\nbody").fields == [(name, value)]
        expected = b"".join(n + b":" + v for n, v in Relaxed.canonicalize_headers([(name, value)]))
        assert canon_header(name, value, "relaxed") == expected, value


def test_select_headers_takes_instances_bottom_up_and_oversigns_nothing():
    headers = [(b"Received", b" 1\r\n"), (b"From", b" a\r\n"), (b"Received", b" 2\r\n")]
    chosen = select_headers(headers, [b"received", b"from", b"from", b"received"])
    assert chosen == [(b"Received", b" 2\r\n"), (b"From", b" a\r\n"), (b"Received", b" 1\r\n")]




SHAPES = [b"x\r" + b"\r\n" * 5000, b"\r\n" * 3000 + b"end", b" \t " * 5000 + b"\r\n", b"a" * 70000,
          b"a \r\n" * 20000, b"\r" * 10000 + b"\n", b"  x  \r\n\r\n  \r\n\t\r\n"]


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("method", ["simple", "relaxed"])
def test_streaming_gives_the_same_bytes_whatever_the_piece_size(method, block):
    rng = random.Random(block)
    bodies = SHAPES + [bytes(rng.choice(b"ab \t\r\n") for _ in range(rng.randint(0, 40))) for _ in range(300)]
    for body in bodies:
        whole = b"".join(bytes(p) for p in canonical_body(body, method, block=1 << 30))
        assert b"".join(bytes(p) for p in canonical_body(body, method, block=block)) == whole, body[:40]


def test_body_canonicalization_agrees_with_dkimpy_on_bare_cr_and_hostile_shapes():
    for body in SHAPES:
        body = body if body.endswith(b"\r\n") else body + b"\r\n"
        assert canon_body(body, "relaxed") == Relaxed.canonicalize_body(body)
        assert canon_body(body, "simple") == Simple.canonicalize_body(body)


def test_body_hashes_serve_several_signatures_in_one_pass():
    body = b"Hello  world \r\n\r\nsecond line\r\n\r\n\r\n"
    canonical = canon_body(body, "relaxed")
    found = body_hashes(body, "relaxed", [("sha256", None), ("sha1", None), ("sha256", 5), ("sha256", 10 ** 6)])
    assert found[("sha256", None)] == hashlib.sha256(canonical).digest()
    assert found[("sha1", None)] == hashlib.sha1(canonical).digest()
    assert found[("sha256", 5)] == hashlib.sha256(canonical[:5]).digest()
    assert found[("sha256", 10 ** 6)] == hashlib.sha256(canonical).digest()
    assert body_hash(b"X: y\r\n\r\n" + body, "relaxed", start=8) == (hashlib.sha256(canonical).digest(),
                                                                         len(canonical))


@pytest.mark.parametrize("body, nofws, simple", [
    (b" a b\t\r\n \r\nc\rd\r\n \t\r\n\r\n", b"ab\r\n\r\ncd\r\n", b" a b\t\r\n \r\nc\rd\r\n \t\r\n"),
    (b" a \r\n\r\n \r\n\r\n\r\n", b"a\r\n", b" a \r\n\r\n \r\n"),
    (b"\r\n\r\n", b"", b""),
    (b"", b"", b""),
])
def test_domainkeys_body_canonicalization(body, nofws, simple):
    assert canon_body(body, "nofws") == nofws
    assert canon_body(body, "dk-simple") == simple
