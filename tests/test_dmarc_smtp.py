"""SPF and DMARC on inbound mail, end to end: a running Salmon server over SMTP, dnsmasq serving the records.

Mail goes to ``live.test`` (the context whose DNS is dnsmasq) from 127.0.0.1, which is not trusted
in the test INI, so SPF is checked for it.  ``blackhole.test`` asks a DNS server that never answers.
"""
import smtplib
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

import dnsserver
from salmonserver import SALMON, start_dkim_app
from salmon_dkim.config import load_settings
from salmon_dkim.core.arc import ARCSealer
from salmon_dkim.core.authres import parse
from salmon_dkim.core.keys import load_private_key
from salmon_dkim.core.listmail import strip_signatures
from salmon_dkim.core.message import Message
from salmon_dkim.core.signer import Signer

pytestmark = pytest.mark.skipif(dnsserver.DNSMASQ is None, reason="dnsmasq is not installed")

RECORDS = """\
example.com. IN TXT "v=spf1 ip4:127.0.0.9 -all"
_dmarc.example.com. IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"
spf-only.test. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.spf-only.test. IN TXT "v=DMARC1; p=reject"
sub.relaxed.test. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.relaxed.test. IN TXT "v=DMARC1; p=reject; aspf=r"
sub.strict.test. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.strict.test. IN TXT "v=DMARC1; p=reject; aspf=s"
_dmarc.parent.test. IN TXT "v=DMARC1; p=none; sp=reject"
_dmarc.pct.test. IN TXT "v=DMARC1; p=reject; pct=0"
_dmarc.orgrecord.test. IN TXT "v=DMARC1; p=reject"
nodmarc.test. IN TXT "a domain without DMARC or SPF records"
"""
INI = """\
[DMARC]
TrustedARCSealers = example.org,
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with start_dkim_app(tmp_path_factory.mktemp("dmarcapp"), live_zone=RECORDS, live_ini=INI) as running:
        yield running


@pytest.fixture(scope="module")
def signer(app):
    return Signer(load_settings(app.configs["main"]))


def compose(author: str, subject: str = "Lunch") -> bytes:
    return (f"From: {author}\r\nTo: bob@live.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((author, subject, time.time())))}@x>\r\n\r\nShall we meet at noon?\r\n").encode()


def send(app, local: str, data: bytes, mail_from: str, domain: str = "live.test"):
    """(reply code, our Authentication-Results clauses by method) for one message."""
    try:
        with app.smtp() as client:
            client.sendmail(mail_from, [f"{local}@{domain}"], data)
    except smtplib.SMTPDataError as refused:
        return refused.smtp_code, refused.smtp_error.decode(), {}
    stored = app.stored(local)
    first = Message(stored).fields[0]
    assert first[0] == b"Authentication-Results"
    return 250, stored, {c.method: c for c in parse(first[1])[1]}


def test_dkim_aligned_pass_passes_dmarc_though_spf_fails(app, signer):
    code, stored, clauses = send(app, "dkim-pass", signer.sign(compose("alice@example.com")).message,
                                 "alice@example.com")
    assert code == 250
    assert (clauses["spf"].result, clauses["dmarc"].result) == ("fail", "pass")
    assert clauses["dmarc"].prop("header", "from") == "example.com"
    assert clauses["dmarc"].prop("policy", "dmarc") == "reject"


def test_unsigned_mail_claiming_a_p_reject_domain_is_refused_with_550(app):
    code, text, _ = send(app, "spoof", compose("ceo@example.com"), "ceo@example.com")
    assert code == 550 and text.startswith("5.7.1 Rejected by the DMARC policy of example.com")


def test_spf_aligned_pass_passes_dmarc(app):
    code, _, clauses = send(app, "spf-pass", compose("x@spf-only.test"), "x@spf-only.test")
    assert code == 250 and (clauses["spf"].result, clauses["dmarc"].result) == ("pass", "pass")
    assert clauses["spf"].prop("smtp", "mailfrom") == "x@spf-only.test"


def test_relaxed_alignment_takes_a_subdomain_and_strict_does_not(app):
    code, _, clauses = send(app, "relaxed", compose("x@relaxed.test"), "bounce@sub.relaxed.test")
    assert code == 250 and clauses["dmarc"].result == "pass"
    code, text, _ = send(app, "strict", compose("x@strict.test"), "bounce@sub.strict.test")
    assert code == 550 and "strict.test" in text


def test_subdomain_policy_applies_to_subdomains_only(app):
    code, _, _ = send(app, "sp-child", compose("x@child.parent.test"), "x@child.parent.test")
    assert code == 550
    code, _, clauses = send(app, "sp-parent", compose("x@parent.test"), "x@parent.test")
    assert code == 250 and clauses["dmarc"].result == "fail" and clauses["dmarc"].prop("policy", "dmarc") == "none"


def test_pct_zero_quarantines_instead_of_rejecting(app):
    code, stored, clauses = send(app, "pct", compose("x@pct.test"), "x@pct.test")
    assert code == 250 and clauses["dmarc"].result == "fail"
    head = bytes(stored[:stored.index(b"\r\n\r\n")])
    assert b"\r\nX-DMARC-Quarantine: Yes\r\n" in head
    assert app.seen("pct")["outcome"]["quarantine"] is True
    assert app.seen("pct")["outcome"]["score"] == 5.0


def test_no_record_is_dmarc_none(app):
    code, _, clauses = send(app, "none", compose("x@nodmarc.test"), "x@nodmarc.test")
    assert code == 250 and clauses["dmarc"].result == "none"


def test_a_record_at_the_organizational_domain_applies(app):
    code, text, _ = send(app, "org", compose("x@mail.orgrecord.test"), "x@mail.orgrecord.test")
    assert code == 550 and "orgrecord.test" in text


def test_a_dns_timeout_is_451_never_550(app):
    code, text, _ = send(app, "timeout", compose("ceo@example.com"), "ceo@example.com", domain="blackhole.test")
    assert code == 451 and text.startswith("4.4.3")


def test_a_forged_quarantine_header_is_removed(app, signer):
    forged = b"X-DMARC-Quarantine: No\r\n" + signer.sign(compose("alice@example.com")).message
    code, stored, _ = send(app, "forged-quarantine", forged, "alice@example.com")
    assert code == 250 and b"X-DMARC-Quarantine" not in stored


def list_forwarded(signer, sealer_domain: str, selector: str, key) -> bytes:
    """alice's signed post, as a list at ``sealer_domain`` forwards it: tag added, her signature stripped,
    sealed with an ARC-Authentication-Results that recorded her aligned DKIM pass on arrival."""
    post = signer.sign(compose("alice@example.com", "Lunch")).message
    changed = strip_signatures(post.replace(b"Subject: Lunch", b"Subject: [lunch] Lunch"))
    sealer = ARCSealer(sealer_domain, selector, key, "lists." + sealer_domain)
    return sealer.seal(changed, results="dkim=pass header.d=example.com; dmarc=pass header.from=example.com")


def test_arc_from_a_trusted_sealer_overrides_a_dmarc_failure(app, signer):
    key = load_private_key(app.workdir / "keys/example.org/s2048.key")
    code, _, clauses = send(app, "arc-trusted", list_forwarded(signer, "example.org", "s2048", key),
                            "lunch-bounces@example.org")
    assert code == 250
    assert (clauses["arc"].result, clauses["dmarc"].result) == ("pass", "fail")
    assert "trusted_forwarder" in clauses["dmarc"].reason and "example.org" in clauses["dmarc"].reason


def test_arc_from_an_untrusted_sealer_does_not(app, signer):
    key = load_private_key(app.workdir / "keys/example.com/s1.key")
    code, text, _ = send(app, "arc-untrusted", list_forwarded(signer, "example.com", "s1", key),
                         "lunch-bounces@example.com")
    assert code == 550 and "DMARC" in text


def test_dmarc_evaluations_make_an_aggregate_report(app, signer):
    import xmlschema
    from conftest import DATA
    send(app, "report-pass", signer.sign(compose("alice@example.com")).message, "alice@example.com")
    send(app, "report-fail", compose("mallory@example.com"), "mallory@example.com")
    now = datetime.now(timezone.utc)
    out = subprocess.run([str(SALMON.with_name("salmon-dkim")), "dmarc-report", "--config", str(app.configs["live"]),
                          "--domain", "example.com", "--since", (now - timedelta(hours=1)).isoformat(),
                          "--until", (now + timedelta(minutes=1)).isoformat()],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    schema_path = next((DATA / "dmarc").glob("*.xsd"))
    schema = xmlschema.XMLSchema(schema_path.read_text().replace(' targetNamespace="http://dmarc.org/dmarc-xml/0.1"', ""))
    schema.validate(out.stdout.decode())
    assert b"<disposition>reject</disposition>" in out.stdout and b"<disposition>none</disposition>" in out.stdout
