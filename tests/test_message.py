"""A message parsed once: fields, body, editing the header block, and the one mailbox parser."""
import time

import pytest

from salmon_dkim.core.message import (AddressError, Message, MessageFormatError, authors, parse_mailboxes,
                                      prepend, remove_fields, to_crlf)


def test_to_crlf_changes_only_bare_line_feeds():
    assert to_crlf(b"a\nb\r\nc\rd\n") == b"a\r\nb\r\nc\rd\r\n"
    same = b"a\r\nb\r\n"
    assert to_crlf(same) is same


def test_message_keeps_folded_fields_whole():
    message = Message(b"From: a\r\nSubject: x\r\n y\r\n\r\nbody\r\n")
    assert message.fields == [(b"From", b" a\r\n"), (b"Subject", b" x\r\n y\r\n")]
    assert bytes(message.body) == b"body\r\n"
    assert message.values(b"subject") == [b" x\r\n y\r\n"] and message.count(b"from") == 1


def test_message_without_body():
    message = Message(b"From: a\r\n")
    assert (message.fields, bytes(message.body)) == ([(b"From", b" a\r\n")], b"")


@pytest.mark.parametrize("data", [b"not a header\r\n\r\nbody", b" continuation first: x\r\n\r\n",
                                  b": no name\r\n\r\n", b"Bad Name: x\r\n\r\n"])
def test_message_refuses_lines_that_are_not_fields(data):
    with pytest.raises(MessageFormatError):
        Message(data)


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


def test_prepend_uses_the_message_line_endings():
    assert prepend(b"Subject: x\r\n\r\nbody\r\n", b"A: 1\r\n") == b"A: 1\r\nSubject: x\r\n\r\nbody\r\n"
    assert prepend(b"Subject: x\n\nbody\n", b"A: 1\r\n B\r\n") == b"A: 1\n B\nSubject: x\n\nbody\n"


def test_lenient_parse_skips_lines_that_are_not_fields():
    message = Message(b"From: a@example.com\r\nnot a field\r\nSubject: s\r\n\r\nbody", lenient=True)
    assert [n for n, _ in message.fields] == [b"From", b"Subject"]


def test_message_id_is_read_once_from_its_field():
    assert Message(b"Message-ID:\r\n <abc@example.com>\r\n\r\n").message_id == "<abc@example.com>"
    assert Message(b"Subject: <not@an.id>\r\n\r\n").message_id is None


# --- mailboxes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, addresses", [
    (b"alice@example.com", ["alice@example.com"]),
    (b"Alice Example <Alice@EXAMPLE.com>", ["Alice@example.com"]),
    (b'"Doe, John" <john@example.com>, bob@example.org', ["john@example.com", "bob@example.org"]),
    (b"=?utf-8?q?J=C3=BCrgen?= <juergen@example.com>", ["juergen@example.com"]),
    (b"alice@example.com (Alice (at) work)", ["alice@example.com"]),
    (b'"bob@example.org" <alice@example.com>', ["alice@example.com"]),
    (b"Team: a@x.example, b@y.example;", ["a@x.example", "b@y.example"]),
    (b"<@relay.example:user@example.com>", ["user@example.com"]),
    (b"user@example.com.", ["user@example.com"]),
    (b"a@b\xc3\xbccher.example", ["a@xn--bcher-kva.example"]),
    (b'"with \\"quote" <q@example.com>', ["q@example.com"]),
])
def test_mailboxes_are_read_from_every_rfc_5322_form(value, addresses):
    assert [m.address for m in parse_mailboxes(value)] == addresses


@pytest.mark.parametrize("value", [
    b"Alice <alice@example.com", b"(unbalanced <a@example.com>", b'"unclosed <a@example.com>',
    b'"Alice" alice@example.com', b"a@[192.0.2.1]", b"a@exa mple.com", b"Team: x: y@z.example;;",
    b"(" * 100 + b"a@example.com" + b")" * 100, b"a@-bad-.example",
])
def test_values_that_are_not_address_lists_say_why(value):
    with pytest.raises(AddressError):
        parse_mailboxes(value)


@pytest.mark.parametrize("value", [
    b" " * 200_000 + b"a@example.com",
    b"\t \r\n " * 40_000 + b"a@example.com",
    b"(" + b"x " * 100_000 + b")" + b"a@example.com",
    b"a@example.com," * 20_000,
    b'"' + b"\\ " * 100_000,
])
def test_hostile_fields_cost_time_linear_in_their_size(value):
    # a bounded field costs milliseconds; email.utils took 28 s on a From of white space
    started = time.perf_counter()
    try:
        parse_mailboxes(value)
    except AddressError:
        pass
    assert time.perf_counter() - started < 2.0


def test_authors_name_the_problem_when_there_is_no_single_author():
    assert authors([b"a@x.example"]).single.address == "a@x.example"
    assert authors([]).problem == "the message has no From field"
    two = authors([b"a@x.example", b"b@y.example"])
    assert two.single is None and two.domains == ("x.example", "y.example") and "2 From fields" in two.problem
    many = authors([b"a@x.example, b@y.example"])
    assert many.single is None and many.domains == ("x.example", "y.example")
    broken = authors([b"(unbalanced a@x.example"])
    assert broken.single is None and not broken.parsable and "cannot be parsed" in broken.problem
    assert authors([b"undisclosed-recipients:;"]).problem == "the From field holds no address"
