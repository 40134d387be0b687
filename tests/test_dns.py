"""The zone-file resolver and the per-message lookup budget."""
import pytest

from salmon_dkim.dns.resolver import (BudgetedResolver, DNSError, LookupLimitExceeded, NoRecord, NoSuchDomain,
                                      ZoneResolver)

ZONE = """\
s1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; "
   "p=ABC" "DEF" )
multi.example.org. 300 IN TXT "x"
multi.example.org. 300 IN TXT "y" "z"
mail.example.net. IN A 192.0.2.1
mail.example.net. IN AAAA 2001:db8::1
example.net. IN MX 10 mail.example.net.
example.net. IN TXT "v=spf1 mx -all"
1.2.0.192.in-addr.arpa. IN PTR mail.example.net.
www.example.net. IN CNAME mail.example.net.
s2._domainkey.example.net. IN CNAME s1._domainkey.example.com.
loop1.example.net. IN CNAME loop2.example.net.
loop2.example.net. IN CNAME loop1.example.net.
"""


@pytest.fixture
def zone(tmp_path):
    path = tmp_path / "test.zone"
    path.write_text(ZONE)
    return ZoneResolver(path)


def test_strings_of_a_record_are_joined_without_separators(zone):
    assert zone.txt("s1._domainkey.example.com") == [b"v=DKIM1; k=rsa; p=ABCDEF"]


def test_names_are_matched_without_case_or_final_dot(zone):
    assert zone.txt("S1._DomainKey.Example.COM.") == [b"v=DKIM1; k=rsa; p=ABCDEF"]


def test_each_record_at_a_name_comes_back(zone):
    assert sorted(zone.txt("multi.example.org")) == [b"x", b"yz"]


def test_a_name_not_in_the_file_does_not_exist(zone):
    with pytest.raises(NoSuchDomain, match="nosuch.example.com: does not exist"):
        zone.txt("nosuch.example.com")


@pytest.mark.parametrize("name", ["mail.example.net", "example.com", "_domainkey.example.com"])
def test_a_name_with_other_records_or_names_below_it_exists_without_txt(zone, name):
    with pytest.raises(NoRecord, match="no TXT record") as info:
        zone.txt(name)
    assert not isinstance(info.value, NoSuchDomain)


@pytest.mark.parametrize("name, rdtype, expected", [
    ("mail.example.net", "A", ["192.0.2.1"]),
    ("mail.example.net", "AAAA", ["2001:db8::1"]),
    ("example.net", "MX", ["10 mail.example.net."]),
    ("1.2.0.192.in-addr.arpa", "PTR", ["mail.example.net."]),
    ("example.net", "TXT", ['"v=spf1 mx -all"']),
    ("www.example.net", "CNAME", ["mail.example.net."]),
])
def test_query_returns_the_records_of_the_type_asked(zone, name, rdtype, expected):
    assert [r.to_text() for r in zone.query(name, rdtype)] == expected


def test_a_cname_is_followed_for_other_types(zone):
    assert [r.to_text() for r in zone.query("WWW.example.net.", "AAAA")] == ["2001:db8::1"]


def test_txt_follows_a_cname_to_the_key_it_names(zone):
    assert zone.txt("s2._domainkey.example.net") == [b"v=DKIM1; k=rsa; p=ABCDEF"]


def test_a_cname_loop_is_no_record(zone):
    with pytest.raises(NoRecord, match="loop1.example.net: its CNAME chain loops"):
        zone.query("loop1.example.net", "A")


def test_a_name_with_other_types_only_is_no_record_of_the_type_asked(zone):
    with pytest.raises(NoRecord, match="example.net: no AAAA record") as info:
        zone.query("example.net", "AAAA")
    assert not isinstance(info.value, NoSuchDomain)


def test_zone_text_serves_as_a_zone_file():
    zone = ZoneResolver.from_text("a.example. IN A 192.0.2.9\n", source="inline")
    assert [r.address for r in zone.query("a.example", "A")] == ["192.0.2.9"]
    with pytest.raises(NoSuchDomain, match="b.example: does not exist in inline"):
        zone.query("b.example", "A")


def test_names_with_special_characters_match_as_dns_writes_them():
    zone = ZoneResolver.from_text("a\\032b.example. IN A 192.0.2.9\n")
    assert [r.address for r in zone.query("a b.example", "A")] == ["192.0.2.9"]


def test_an_invalid_name_is_no_record(zone):
    with pytest.raises(NoRecord, match="not a valid DNS name"):
        zone.query("a..example.com", "A")


def test_a_file_that_is_not_a_zone_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.zone"
    path.write_text("s1._domainkey.example.com. IN TXT ( unterminated\n")
    with pytest.raises(DNSError, match="broken.zone: cannot be read as a zone file"):
        ZoneResolver(path)


def test_budget_allows_the_limit_then_refuses_without_asking(zone):
    asked = []

    class Counting:
        def txt(self, name):
            asked.append(name)
            return zone.txt(name)

    budget = BudgetedResolver(Counting(), 2)
    budget.txt("multi.example.org")
    with pytest.raises(NoRecord):
        budget.txt("example.com")
    with pytest.raises(LookupLimitExceeded, match="per-message DNS lookup limit"):
        budget.txt("multi.example.org")
    assert asked == ["multi.example.org", "example.com"]


def test_txt_and_query_draw_on_one_budget(zone):
    budget = BudgetedResolver(zone, 2)
    budget.query("example.net", "MX")
    budget.txt("example.net")
    with pytest.raises(LookupLimitExceeded, match=r"mail.example.net: not looked up; .*limit \(2\)"):
        budget.query("mail.example.net", "A")
