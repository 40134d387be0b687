"""Canonicalization and message splitting (RFC 6376 section 3.4)."""
import random

import pytest
from dkim.canonicalization import Relaxed, Simple

from salmon_dkim.core.canon import (MessageFormatError, canon_body, canon_header, compact, parse_tags, remove_fields,
                               select_headers, split_message, strip_b_value, to_crlf)


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
        headers, _ = split_message(name + b":" + value + b"\r\nbody")
        assert headers == [(name, value)]
        expected = b"".join(n + b":" + v for n, v in Relaxed.canonicalize_headers([(name, value)]))
        assert canon_header(name, value, "relaxed") == expected, value


def test_to_crlf_changes_only_bare_line_feeds():
    assert to_crlf(b"a\nb\r\nc\rd\n") == b"a\r\nb\r\nc\rd\r\n"
    same = b"a\r\nb\r\n"
    assert to_crlf(same) is same


def test_split_message_keeps_folded_fields_whole():
    headers, body = split_message(b"From: a\r\nSubject: x\r\n y\r\n\r\nbody\r\n")
    assert headers == [(b"From", b" a\r\n"), (b"Subject", b" x\r\n y\r\n")]
    assert body == b"body\r\n"


def test_split_message_without_body():
    assert split_message(b"From: a\r\n") == ([(b"From", b" a\r\n")], b"")


@pytest.mark.parametrize("data", [b"not a header\r\n\r\nbody", b" continuation first: x\r\n\r\n",
                                  b": no name\r\n\r\n", b"Bad Name: x\r\n\r\n"])
def test_split_message_refuses_lines_that_are_not_fields(data):
    with pytest.raises(MessageFormatError):
        split_message(data)


def test_select_headers_takes_instances_bottom_up_and_oversigns_nothing():
    headers = [(b"Received", b" 1\r\n"), (b"From", b" a\r\n"), (b"Received", b" 2\r\n")]
    chosen = select_headers(headers, [b"received", b"from", b"from", b"received"])
    assert chosen == [(b"Received", b" 2\r\n"), (b"From", b" a\r\n"), (b"Received", b" 1\r\n")]


def test_parse_tags_folds_whitespace():
    assert parse_tags(b" v=1; a=rsa-sha256;\r\n b=ab cd;") == {b"v": b"1", b"a": b"rsa-sha256",
                                                               b"b": b"ab cd"}


@pytest.mark.parametrize("value, problem", [(b"v=1; v=1", "duplicate tag v="),
                                            (b"v=1; novalue", "is not tag=value"),
                                            (b"1v=x", "is not tag=value")])
def test_parse_tags_refuses_broken_lists(value, problem):
    with pytest.raises(ValueError, match=problem):
        parse_tags(value)


def test_strip_b_value_keeps_bh_and_everything_else():
    assert strip_b_value(b" v=1; bh=abc; b=xyz\r\n  def; d=x") == b" v=1; bh=abc; b=; d=x"
    assert strip_b_value(b"b=xyz; bh=abc") == b"b=; bh=abc"


def test_compact_removes_folding_whitespace():
    assert compact(b"ab c\r\n\td") == b"abcd"


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_remove_fields_drops_folded_fields_whole_and_keeps_every_other_byte(newline):
    data = (b"X-Drop: a" + newline + b"\tfolded" + newline + b"Subject:  keep  " + newline
            + b"x-drop : b" + newline + newline + b"X-Drop: in the body" + newline)
    kept = remove_fields(data, lambda name, value: name == b"x-drop")
    assert kept == b"Subject:  keep  " + newline + newline + b"X-Drop: in the body" + newline


def test_remove_fields_passes_the_value_with_its_folding():
    seen = []
    remove_fields(b"A: one\r\n two\r\n\r\n", lambda name, value: seen.append((name, value)))
    assert seen == [(b"a", b" one\r\n two\r\n")]


@pytest.mark.parametrize("data", [b"\r\nbody only\r\n", b"", b"No-Body: x\r\n"])
def test_remove_fields_without_headers_or_body(data):
    assert remove_fields(data, lambda name, value: False) == data
    assert remove_fields(b"X: y\r\n" + data, lambda name, value: name == b"x") == data
