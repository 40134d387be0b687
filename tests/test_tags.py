"""Tag lists (RFC 6376 section 3.2), b= stripping, dkim-quoted-printable and header folding."""
import pytest

from salmon_dkim.core.tags import compact, decode_qp, fold, parse_tags, signature_lines, spill, strip_b_value


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




@pytest.mark.parametrize("value", [b"s=x;;", b";s=x", b"s=x; ;d=y", b"", b" ; "])
def test_parse_tags_refuses_empty_elements_but_one_final_semicolon(value):
    with pytest.raises(ValueError, match="empty tag list element"):
        parse_tags(value)


def test_parse_tags_takes_one_final_semicolon():
    assert parse_tags(b"v=1; d=example.com;  \r\n ") == {b"v": b"1", b"d": b"example.com"}


def test_decode_qp_reads_dkim_quoted_printable():
    assert decode_qp(b"jlong@messiah=2Eedu") == b"jlong@messiah.edu"
    assert decode_qp(b"a=3Db@x.\r\n example") == b"a=b@x.example"


def test_fold_keeps_lines_under_the_width_and_the_unfolded_text():
    pieces = [" word%d" % i for i in range(40)]
    lines = fold("Field:", pieces, 40)
    assert all(len(line) <= 40 for line in lines)
    assert "".join(lines) == "Field:" + "".join(pieces)


def test_signature_lines_break_h_at_colons_and_spill_fills_lines():
    lines = signature_lines("DKIM-Signature", [("v", "1"), ("d", "example.com")], ["from"] * 30)
    assert lines[-1].endswith(" b=") and all(len(line) <= 77 for line in lines)
    spill(lines, "A" * 400)
    assert all(len(line) <= 77 for line in lines) and "".join(lines).count("A") == 400
