"""What to do with a verified message, as on MDaemon's DKIM Verification screen.

``decide`` turns a VerificationReport and the SMTP session into an Outcome:
accept (with a score), reject with 550, tempfail with 451, or skip.  Texts
carry the RFC 3463 enhanced code and why (RFC 7372 codes for DKIM); the
glue puts the basic code in front: ``SMTPError(outcome.code, outcome.text)``.

Order: exemptions, then DNS trouble (a temperror with no pass is never
answered with 550: the sender must retry), then ADSP, DMARC, reject-on-fail
and the score threshold.  DMARC (RFC 7489): a failure whose disposition is
reject answers 550 as ``[DMARC] RejectAction`` says, quarantine adds
``QuarantineScore`` and marks the outcome; an author that cannot be determined
is handled as section 6.6.1 describes (``UndeterminedAuthorAction``).
"""
from __future__ import annotations

import ipaddress
from typing import Optional

from salmon_dkim.core.results import Outcome, Session, VerificationReport



def in_networks(ip: Optional[str], networks) -> bool:
    """Whether ``ip`` (a peer address as a string; None or garbage: no) is in any of ``networks``."""
    if not ip or not networks:
        return False
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:192.0.2.1 on dual-stack sockets
    return any(address in network for network in networks)


def exempt(session: Session, settings) -> Optional[str]:
    """Why verification is skipped for this session, or None."""
    options = settings.verification
    if not options.enabled:
        return "DKIM verification is off"
    if options.skip_authenticated and (session.authenticated
                                       or in_networks(session.peer_ip, options.authenticated_peers)):
        return "authenticated session"
    if options.skip_trusted_ips and in_networks(session.peer_ip, options.trusted_ips):
        return f"trusted IP {session.peer_ip}"
    if in_networks(session.peer_ip, options.white_list_ips):
        return f"white-listed IP {session.peer_ip}"
    return None


def may_sign(session: Optional[Session], settings) -> Optional[str]:
    """Why received mail from ``session`` must not be signed with our keys, or None when it may.

    ``session`` None: mail the app composed itself, which may always be signed.  Otherwise
    ``[Signing] SignFor`` says who earned it: an authenticated session, also a peer in
    TrustedIPs ("trusted"), or anyone ("any").  A stranger's mail that merely claims our
    domain in From is never signed.
    """
    mode = settings.signing.sign_for
    if session is None or mode == "any" or session.authenticated:
        return None
    if mode == "trusted" and in_networks(session.peer_ip, settings.verification.trusted_ips):
        return None
    return (f"received from {session.peer_ip or 'an unknown peer'} without authentication "
            f"([Signing] SignFor = {mode})")


def _dkim(report: VerificationReport):
    """The DKIM results: DomainKeys (historic) ones are reported, but decide nothing."""
    return [r for r in report.results if r.type == "dkim"]


def score(report: VerificationReport, settings) -> float:
    """The message's DKIM score: per-signature pass/fail scores, once the approved-domain score.

    A DomainKeys pass by an approved domain earns ApprovedScore as a DKIM pass does (MDaemon's
    approved list takes either); pass and fail scores count DKIM signatures only.
    """
    options = settings.verification
    results = _dkim(report)
    total = sum(options.pass_score for r in results if r.result == "pass")
    total += sum(options.fail_score for r in results if r.result == "fail")
    if any(r.result == "pass" and r.domain in options.approved_domains for r in report.results):
        total += options.approved_score
    if adsp_failed(report) and options.adsp_action == "score":
        total += options.adsp_score
    if dmarc_disposition(report, settings) == "quarantine":
        total += settings.dmarc.quarantine_score
    return total


def dmarc_disposition(report: VerificationReport, settings) -> str:
    """What DMARC asks for this message after [DMARC] RejectAction: "reject", "quarantine" or "none"."""
    dmarc = report.dmarc
    if dmarc is None or dmarc.result != "fail":
        return "none"
    if dmarc.disposition == "reject":
        return {"reject": "reject", "score": "quarantine"}.get(settings.dmarc.reject_action, "none")
    return dmarc.disposition


def adsp_failed(report: VerificationReport) -> bool:
    """ADSP says the message should not be here: fail, discard, or no author to check it for."""
    authors = report.authors
    unknown = authors is not None and (not authors.domains or not authors.parsable)
    return report.adsp in ("fail", "discard") or (report.adsp == "permerror" and unknown)


def _summary(report: VerificationReport) -> str:
    return "; ".join(f"{r.domain or '?'} {r.result}: {r.reason}" for r in report.results) or "unsigned"


def decide(report: Optional[VerificationReport], session: Session, settings) -> Outcome:
    """The outcome for one message; ``report`` None means it was not verified."""
    options = settings.verification
    why_skip = exempt(session, settings)
    if why_skip or report is None:
        return Outcome("skip", None, "", 0.0, False, why_skip or "not verified")
    total = score(report, settings)
    summary = _summary(report)

    def reject(text: str, reason: str) -> Outcome:
        return Outcome("reject", 550, text, total, options.close_connection_on_reject, reason)

    results = _dkim(report)
    passed = any(r.result == "pass" for r in results)
    waiting = []  # what failed for now: the sender must retry, never a 550
    if not passed:
        waiting += [f"DKIM key lookup for {r.domain} failed temporarily" for r in results if r.result == "temperror"]
        if report.adsp == "temperror":
            waiting.append("ADSP lookup failed temporarily")
    if report.dmarc is not None and report.dmarc.result == "temperror":
        waiting.append(f"DMARC check of {report.dmarc.domain or 'the author domain'} failed temporarily")
    if waiting:
        where = waiting[0]
        if options.temperror_action == "accept":
            return Outcome("accept", None, "", total, False, f"{where}; accepted by TempErrorAction")
        return Outcome("tempfail", 451, f"4.4.3 {where}; try again later", total, False, summary)
    if adsp_failed(report) and options.adsp_action == "reject":
        if report.adsp == "permerror":
            return reject("5.7.22 The author of this message cannot be determined from its From field, "
                          "so its domain's signing practice cannot be checked", report.adsp_reason or "ADSP permerror")
        practice = "discardable" if report.adsp == "discard" else "all"
        domains = ", ".join(report.authors.domains if report.authors else ()) or "?"
        return reject(f"5.7.22 No valid DKIM signature of the author domain {domains}, "
                      f"which signs all its mail (ADSP dkim={practice})",
                      report.adsp_reason or f"ADSP {report.adsp}")
    dmarc = report.dmarc
    if dmarc is not None and dmarc.result == "permerror" and not dmarc.domain \
            and settings.dmarc.undetermined_author_action == "reject":
        return reject("5.7.1 The author of this message cannot be determined from its From field "
                      "(RFC 7489 section 6.6.1)", dmarc.reason)
    disposition = dmarc_disposition(report, settings)
    if disposition == "reject":
        return reject(f"5.7.1 Rejected by the DMARC policy of {dmarc.domain}: no DKIM or SPF pass aligned "
                      f"with the From domain", dmarc.reason)
    failed = [r for r in results if r.result == "fail"]
    if options.reject_on_fail and failed and not passed:
        return reject(f"5.7.20 DKIM signature of {failed[0].domain} failed: {failed[0].reason}", summary)
    if options.reject_score > 0 and total >= options.reject_score:
        return reject(f"5.7.1 DKIM score {total:g} reaches the reject threshold {options.reject_score:g}",
                      summary)
    return Outcome("accept", None, "", total, False, summary, quarantine=disposition == "quarantine")
