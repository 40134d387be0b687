"""DMARC aggregate reports: activity-log entries in, RFC 7489 appendix C XML out, valid against its schema."""
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import xmlschema
from click.testing import CliRunner

from salmon_dkim.cli import main
from salmon_dkim.core.dmarc import evaluate_dmarc
from salmon_dkim.core.dmarc_report import NothingToReport, activity_entries, aggregate_report
from salmon_dkim.core.spf import SPFResult
from salmon_dkim.dns.resolver import ZoneResolver

XSD = Path(__file__).with_name("data") / "dmarc" / "rfc7489-appendix-c.xsd"
ZONE = """\
_dmarc.example.com.  IN TXT "v=DMARC1; p=reject; sp=quarantine; pct=50; rua=mailto:d@example.com"
_dmarc.example.org.  IN TXT "v=DMARC1; p=none"
"""
BEGIN = datetime(2024, 5, 1, tzinfo=timezone.utc)
END = datetime(2024, 5, 2, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def schema():
    # As printed, the schema declares a targetNamespace but names its types without a prefix, so no
    # validator loads it; without the targetNamespace it describes <feedback> as receivers send it.
    text = XSD.read_text("utf-8").replace(' targetNamespace="http://dmarc.org/dmarc-xml/0.1"', "")
    return xmlschema.XMLSchema(text)


@dataclass(frozen=True)
class Sig:
    domain: str
    selector: str = "s1"
    result: str = "pass"
    type: str = "dkim"


def entries_for(from_domain, dkim=(), spf=None, *, ip="192.0.2.1", time="2024-05-01T10:00:00Z", draw=0.1):
    zone = ZoneResolver.from_text(ZONE)
    result = evaluate_dmarc([from_domain], dkim, spf, zone, sample=lambda: draw)
    return [{"time": time, "event": "dmarc", **fields}
            for fields in activity_entries(result, source_ip=ip, dkim_results=dkim, spf_result=spf,
                                           envelope_to="our.example")]


def report(entries, domain="example.com", **kwargs):
    return aggregate_report(entries, domain, BEGIN, END, org_name="Receiver Inc.", email="dmarc@our.example",
                            **kwargs)


def mixed_entries():
    spf_pass = SPFResult("pass", "mailfrom", "bounce.example.com", "bounce.example.com", "")
    spf_fail = SPFResult("fail", "mailfrom", "spoof.example.net", "x@spoof.example.net", "")
    return (entries_for("example.com", [Sig("example.com")], spf_pass) * 3
            + entries_for("example.com", [Sig("example.net", result="fail")], spf_fail, ip="2001:db8::5")
            + entries_for("news.example.com", [], None, ip="198.51.100.7", draw=0.9)
            + entries_for("example.org", [], None))


def test_report_is_valid_against_the_appendix_c_schema(schema):
    schema.validate(report(mixed_entries()).xml)


def test_identical_outcomes_are_counted_in_one_record():
    result = report(mixed_entries())
    assert (result.records, result.messages) == (3, 5)
    rows = ET.fromstring(result.xml).findall("record/row")
    assert [(r.findtext("source_ip"), r.findtext("count")) for r in rows][0] == ("192.0.2.1", "3")


def test_a_record_carries_dispositions_alignment_identifiers_and_auth_results():
    feedback = ET.fromstring(report(mixed_entries()).xml)
    failed = next(r for r in feedback.findall("record") if r.findtext("row/source_ip").startswith("2001"))
    assert failed.findtext("row/source_ip") == "2001:0db8:0000:0000:0000:0000:0000:0005"  # the schema's pattern
    assert [failed.findtext(f"row/policy_evaluated/{t}") for t in ("disposition", "dkim", "spf")] == [
        "reject", "fail", "fail"]
    assert [failed.findtext(f"identifiers/{t}") for t in ("envelope_to", "envelope_from", "header_from")] == [
        "our.example", "spoof.example.net", "example.com"]
    assert [failed.findtext(f"auth_results/dkim/{t}") for t in ("domain", "selector", "result")] == [
        "example.net", "s1", "fail"]
    assert [failed.findtext(f"auth_results/spf/{t}") for t in ("domain", "scope", "result")] == [
        "spoof.example.net", "mfrom", "fail"]


def test_sampled_out_failures_give_their_reason():
    feedback = ET.fromstring(report(mixed_entries()).xml)
    sampled = next(r for r in feedback.findall("record") if r.findtext("row/source_ip") == "198.51.100.7")
    evaluated = sampled.find("row/policy_evaluated")
    assert (evaluated.findtext("disposition"), evaluated.findtext("reason/type"),
            evaluated.findtext("reason/comment")) == ("none", "sampled_out", "pct=50")
    assert sampled.findtext("auth_results/spf/result") == "none"  # no SPF ran: the schema still wants one


def test_metadata_and_the_policy_published():
    feedback = ET.fromstring(report(mixed_entries(), report_id="r-1").xml)
    assert [feedback.findtext(f"report_metadata/{t}") for t in ("org_name", "email", "report_id")] == [
        "Receiver Inc.", "dmarc@our.example", "r-1"]
    assert feedback.findtext("report_metadata/date_range/begin") == str(int(BEGIN.timestamp()))
    assert [feedback.findtext(f"policy_published/{t}") for t in ("domain", "adkim", "aspf", "p", "sp", "pct", "fo")
            ] == ["example.com", "r", "r", "reject", "quarantine", "50", "0"]


def test_only_entries_in_the_period_count_begin_included_end_not():
    entries = (entries_for("example.com", time="2024-05-01T00:00:00Z")
               + entries_for("example.com", time="2024-05-02T00:00:00Z")
               + entries_for("example.com", time="2024-04-30T23:59:59Z"))
    assert report(entries).messages == 1


def test_malformed_entries_are_skipped_and_counted(schema):
    bad = [{"time": "2024-05-01T01:00:00Z", "event": "dmarc", "source_ip": "not an ip",
            "dmarc": {"record_domain": "example.com"}},
           {"time": "yesterday", "event": "dmarc", "dmarc": {"record_domain": "example.com"}}]
    result = report(mixed_entries() + bad + [{"event": "verify"}, "not an object"])
    assert (result.messages, result.skipped) == (5, 2)
    schema.validate(result.xml)


def test_text_that_xml_cannot_carry_is_dropped(schema):
    [entry] = entries_for("example.com")
    entry["envelope_to"] = "our\x01.example"
    schema.validate(report([entry]).xml)
    assert b"our.example" in report([entry]).xml


def test_no_evaluation_for_the_domain_is_nothing_to_report():
    with pytest.raises(NothingToReport, match="no DMARC evaluations under the record of example.net"):
        report(mixed_entries(), domain="example.net")


def test_evaluations_without_a_record_are_not_logged_for_reports():
    assert entries_for("nothing.example.net") == []


# -- salmon-dkim dmarc-report ---------------------------------------------------

def config_with_log(tmp_path, entries):
    log = tmp_path / "activity.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    ini = tmp_path / "salmon_dkim.ini"
    ini.write_text(f"[Logging]\nActivityLog = {log}\n")
    return str(ini)


def run(*args):
    return CliRunner().invoke(main, ["dmarc-report", *args])


def test_command_writes_the_report_for_the_domain_and_period(tmp_path, schema):
    result = run("--domain", "example.com", "--since", "2024-05-01", "--until", "2024-05-02T00:00:00Z",
                 "--config", config_with_log(tmp_path, mixed_entries()), "--org-name", "Receiver Inc.",
                 "--email", "dmarc@our.example")
    assert result.exit_code == 0, result.stderr
    schema.validate(result.stdout_bytes)
    assert "5 messages in 3 records for example.com" in result.stderr


def test_command_with_nothing_in_the_period_exits_1(tmp_path):
    result = run("--domain", "example.com", "--since", "2023-01-01", "--until", "2023-01-02",
                 "--config", config_with_log(tmp_path, mixed_entries()))
    assert result.exit_code == 1 and "Nothing to report" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("since, until, message", [
    ("first of May", "2024-05-02", "--since 'first of May' is not an ISO 8601 time"),
    ("2024-05-02", "2024-05-01", "is not after --since"),
])
def test_command_refuses_bad_times_with_exit_2(tmp_path, since, until, message):
    result = run("--domain", "example.com", "--since", since, "--until", until,
                 "--config", config_with_log(tmp_path, []))
    assert result.exit_code == 2 and message in result.stderr


def test_command_without_an_activity_log_exits_2():
    result = run("--domain", "example.com", "--since", "2024-05-01", "--until", "2024-05-02")
    assert result.exit_code == 2 and "[Logging] ActivityLog" in result.stderr
