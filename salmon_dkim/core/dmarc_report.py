"""DMARC aggregate reports (RFC 7489 section 7.2 and appendix C) from the activity log's "dmarc" entries.

Two halves, one format: ``activity_entries`` turns a DMARCResult (with the
session's IP, the DKIM results and the SPF result) into the fields of the
activity log's ``"dmarc"`` events, one per author domain; ``aggregate_report``
turns those entries, as read back, into the appendix C XML for one domain and
one reporting period.  An entry's fields (besides "time" and "event", which the
activity log adds)::

    source_ip       "192.0.2.1"
    header_from     the author domain
    envelope_from   the SPF-checked domain (MAIL FROM, or HELO for a null sender), "" when none
    envelope_to     the recipient domain, or null
    dmarc           {"result", "disposition", "policy", "record_domain", "adkim", "aspf", "p", "sp",
                     "pct", "fo", "dkim": "pass"|"fail", "spf": "pass"|"fail" (aligned or not),
                     "override", "override_comment"}
    spf             {"domain", "scope": "mfrom"|"helo", "result"} or null
    dkim            [{"domain", "selector", "result"}, ...]

Entries that do not fit are skipped and counted, never fatal: the log is
written by other code and may hold older shapes.
"""
from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, List, Optional, Tuple

from salmon_dkim.core.dmarc import POLICIES, DMARCResult

OVERRIDES = ("forwarded", "sampled_out", "trusted_forwarder", "mailing_list", "local_policy", "other")
DKIM_RESULTS = ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror")
SPF_RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
# Characters XML 1.0 cannot carry; a log line could hold them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def activity_entries(result: DMARCResult, *, source_ip: str, dkim_results: Iterable, spf_result,
                     envelope_to: Optional[str] = None) -> List[dict]:
    """The activity-log fields of one evaluation, one dict per author domain that had a DMARC record.

    Record each as ``activity.record("dmarc", **fields)``.  Results without a
    record (none, or errors before one was found) have no one to report to.
    """
    dkim = [{"domain": r.domain, "selector": getattr(r, "selector", ""), "result": r.result}
            for r in dkim_results if r.type == "dkim" and r.domain]
    spf = None
    if spf_result is not None and spf_result.domain:
        spf = {"domain": spf_result.domain, "scope": "helo" if spf_result.identity == "helo" else "mfrom",
               "result": spf_result.result}
    entries = []
    for one in result.per_domain or (result,):
        record = one.record
        if record is None:
            continue
        entries.append({
            "source_ip": source_ip, "header_from": one.domain,
            "envelope_from": spf["domain"] if spf else "", "envelope_to": envelope_to,
            "dmarc": {"result": one.result, "disposition": one.disposition, "policy": one.policy,
                      "record_domain": record.domain, "adkim": record.adkim, "aspf": record.aspf,
                      "p": record.p, "sp": record.sp, "pct": record.pct, "fo": record.fo,
                      "dkim": "pass" if one.dkim_aligned else "fail",
                      "spf": "pass" if one.spf_aligned else "fail",
                      "override": one.override, "override_comment": one.override_comment},
            "spf": spf, "dkim": dkim})
    return entries


@dataclass(frozen=True)
class AggregateReport:
    xml: bytes
    records: int  # <record> elements (rows of identical outcome)
    messages: int  # evaluations counted in them
    skipped: int  # entries for the domain and period that did not fit the format


class NothingToReport(ValueError):
    """No DMARC evaluation for the domain in the period (a report needs at least one record)."""


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as an aware datetime (UTC when it names no zone); ValueError when it is not one."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _text(value) -> str:
    return _NOT_XML.sub("", str(value if value is not None else ""))


def _word(value, allowed: Tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _row(entry: dict) -> Tuple:
    """The hashable outcome of one entry (rows with equal outcomes are counted together); ValueError if malformed."""
    ip = ipaddress.ip_address(entry["source_ip"])
    dmarc = entry["dmarc"]
    override = dmarc.get("override") or ""
    reason = (_word(override, OVERRIDES), _text(dmarc.get("override_comment"))) if override else None
    spf = entry.get("spf")
    spf_row = ((_text(spf["domain"]), _word(spf["scope"], ("helo", "mfrom")), _word(spf["result"], SPF_RESULTS))
               if spf else None)
    dkim_rows = tuple((_text(d["domain"]), _text(d.get("selector")), _word(d["result"], DKIM_RESULTS))
                      for d in entry.get("dkim") or ())
    return (ip.exploded, _word(dmarc["disposition"], POLICIES), _word(dmarc["dkim"], ("pass", "fail")),
            _word(dmarc["spf"], ("pass", "fail")), reason, _text(entry.get("envelope_to") or ""),
            _text(entry.get("envelope_from")), _text(entry["header_from"]), dkim_rows, spf_row)


def _published(entry: dict) -> Tuple:
    d = entry["dmarc"]
    return (_word(d["adkim"], ("r", "s")), _word(d["aspf"], ("r", "s")), _word(d["p"], POLICIES),
            _word(d["sp"], POLICIES), int(d["pct"]), _text(d["fo"]))


def _sub(parent: ET.Element, tag: str, text=None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def aggregate_report(entries: Iterable[dict], domain: str, begin: datetime, end: datetime, *,
                     org_name: str, email: str, report_id: Optional[str] = None,
                     extra_contact_info: Optional[str] = None) -> AggregateReport:
    """The appendix C report for evaluations under the record of ``domain`` with begin <= time < end.

    ``entries`` are activity-log entries (others than "dmarc" are passed over).
    Raises NothingToReport when no evaluation falls in.  policy_published is
    the record as last seen in the period.
    """
    domain = domain.lower().rstrip(".")
    rows: Counter = Counter()
    published, latest, skipped = None, None, 0
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("event") != "dmarc":
            continue
        try:
            if str(entry["dmarc"]["record_domain"]).lower().rstrip(".") != domain:
                continue
            when = parse_time(entry["time"])
            if not begin <= when < end:
                continue
            row, policy = _row(entry), _published(entry)
        except (KeyError, TypeError, ValueError, AttributeError):
            skipped += 1
            continue
        rows[row] += 1
        if latest is None or when >= latest:
            latest, published = when, policy
    if not rows:
        raise NothingToReport(f"no DMARC evaluations under the record of {domain} between "
                              f"{begin.isoformat()} and {end.isoformat()}")
    first, last = int(begin.timestamp()), int(end.timestamp())

    feedback = ET.Element("feedback")
    _sub(feedback, "version", "1.0")
    meta = _sub(feedback, "report_metadata")
    _sub(meta, "org_name", _text(org_name))
    _sub(meta, "email", _text(email))
    if extra_contact_info:
        _sub(meta, "extra_contact_info", _text(extra_contact_info))
    _sub(meta, "report_id", _text(report_id or f"{domain}.{first}.{last}"))
    dates = _sub(meta, "date_range")
    _sub(dates, "begin", first)
    _sub(dates, "end", last)
    policy = _sub(feedback, "policy_published")
    adkim, aspf, p, sp, pct, fo = published
    for tag, value in (("domain", domain), ("adkim", adkim), ("aspf", aspf), ("p", p), ("sp", sp),
                       ("pct", pct), ("fo", fo)):
        _sub(policy, tag, value)
    for row, count in sorted(rows.items(), key=lambda item: (-item[1], item[0][0])):
        (ip, disposition, dkim_aligned, spf_aligned, reason, envelope_to, envelope_from, header_from,
         dkim_rows, spf_row) = row
        record = _sub(feedback, "record")
        row_element = _sub(record, "row")
        _sub(row_element, "source_ip", ip)
        _sub(row_element, "count", count)
        evaluated = _sub(row_element, "policy_evaluated")
        _sub(evaluated, "disposition", disposition)
        _sub(evaluated, "dkim", dkim_aligned)
        _sub(evaluated, "spf", spf_aligned)
        if reason:
            reason_element = _sub(evaluated, "reason")
            _sub(reason_element, "type", reason[0])
            if reason[1]:
                _sub(reason_element, "comment", reason[1])
        identifiers = _sub(record, "identifiers")
        if envelope_to:
            _sub(identifiers, "envelope_to", envelope_to)
        _sub(identifiers, "envelope_from", envelope_from)
        _sub(identifiers, "header_from", header_from)
        auth = _sub(record, "auth_results")
        for d, selector, result in dkim_rows:
            dkim_element = _sub(auth, "dkim")
            _sub(dkim_element, "domain", d)
            if selector:
                _sub(dkim_element, "selector", selector)
            _sub(dkim_element, "result", result)
        # The schema wants an SPF result in every record: "none" for the envelope domain when none ran.
        spf_domain, scope, result = spf_row or (envelope_from or header_from, "mfrom", "none")
        spf_element = _sub(auth, "spf")
        _sub(spf_element, "domain", spf_domain)
        _sub(spf_element, "scope", scope)
        _sub(spf_element, "result", result)
    ET.indent(feedback)
    xml = ET.tostring(feedback, encoding="UTF-8", xml_declaration=True) + b"\n"
    return AggregateReport(xml, len(rows), sum(rows.values()), skipped)
