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
