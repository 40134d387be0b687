"""The settings salmon-dkim runs with: frozen, typed, passed in (like ``email.policy``).

Built from the INI file by :mod:`salmon_dkim.config.load`; every field has the
INI option's default, so ``Settings()`` is a working configuration.  Clone one
with ``dataclasses.replace``.  Nothing here reads a file.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional, Tuple, Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class DomainKeys:
    """The signing keys of one domain: one selector per key (two for dual signing).

    With the key lifecycle (RequirePublishedKeys) these are the keys the domain
    starts with; the keys ``salmon-dkim rotate`` makes after them join them.
    ``enabled`` False keeps the entry but its keys do not sign ([Domains] Enabled = No).
    """

    domain: str
    selectors: Tuple[str, ...]
    key_files: Tuple[Path, ...]
    include_subdomains: bool = False
    enabled: bool = True
    sign_domainkeys: bool = False  # also a DomainKey-Signature (RFC 4870) with the domain's RSA key
    domainkeys_canon: str = "nofws"  # "nofws" | "simple"


@dataclass(frozen=True)
class SigningSettings:
    enabled: bool = True
    keys_dir: Path = Path("keys")
    domains: Mapping[str, DomainKeys] = field(default_factory=lambda: MappingProxyType({}))
    default: Optional[DomainKeys] = None
    sender_selectors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    skip_senders: Tuple[str, ...] = ()
    headers: Tuple[str, ...] = ("from", "date", "subject", "reply-to", "sender", "to", "cc", "message-id",
                                "in-reply-to", "references", "content-type", "mime-version",
                                "content-transfer-encoding")
    oversign_headers: Tuple[str, ...] = ("from", "to", "cc", "subject", "date", "message-id", "reply-to",
                                         "in-reply-to", "references", "mime-version", "content-type")
    header_canon: str = "relaxed"
    body_canon: str = "relaxed"
    expire_seconds: int = 7 * 86400
    body_length_tag: bool = False
    max_message_size: int = 50 * 1024 * 1024
    sign_for: str = "authenticated"  # whose received mail is signed: "authenticated" | "trusted" | "any"
    # the key lifecycle: a key signs once DNS publishes it (salmon_dkim.core.lifecycle)
    require_published_keys: bool = True
    shared_signature: str = "fallback"  # "fallback": the default key signs when the domain has none; "always"
    pending_key_days: float = 7.0
    retire_after_days: float = 7.0
    pending_check_seconds: float = 30.0
    active_check_seconds: float = 3600.0
    sign_domainkeys: bool = False  # [Signing] SignDomainKeys: the default of every [Domains] entry
    domainkeys_canon: str = "nofws"  # [Signing] DomainKeysCanonicalization: the same, for c=
    domainkeys_headers: Tuple[str, ...] = ()  # the DomainKey-Signature's h= names; () = no h=, every field


@dataclass(frozen=True)
class VerificationSettings:
    enabled: bool = True
    authserv_id: str = ""
    max_signatures: int = 5
    clock_drift: int = 300
    min_key_bits: int = 1024
    allow_sha1: bool = False
    honor_body_length: bool = False
    skip_authenticated: bool = True
    skip_trusted_ips: bool = True
    trusted_ips: Tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    white_list_ips: Tuple[IPNetwork, ...] = ()
    authenticated_peers: Tuple[IPNetwork, ...] = ()
    authenticated_header: str = ""
    approved_domains: Tuple[str, ...] = ()
    approved_score: float = -0.5
    pass_score: float = 0.0
    fail_score: float = 0.0
    reject_on_fail: bool = False
    reject_score: float = 0.0
    score_header: str = "X-DKIM-Score"
    close_connection_on_reject: bool = False
    temperror_action: str = "tempfail"
    internal_error_action: str = "tempfail"
    adsp: bool = False
    adsp_action: str = "reject"
    adsp_score: float = 5.0
    max_message_size: int = 50 * 1024 * 1024
    verify_domainkeys: bool = True  # check DomainKey-Signatures (only when no DKIM signature passes)


@dataclass(frozen=True)
class ListSettings:
    """[DomainKeys]: what happens to mailing-list mail (MDaemon's names)."""

    strip_sigs_from_list_mail: bool = True
    sign_list_mail: bool = True
    arc_seal: bool = False
    arc_verify: bool = True
    max_arc_instances: int = 10
    dmarc_mitigation: str = "munge_from"  # "munge_from" | "wrap_message" | "none"
    arc_domain: str = ""  # d= of our seals on forwarded mail; "" = [Signing] DefaultDomain
    arc_selector: str = ""  # "" = the sealing domain's first RSA key in [Domains]
    arc_key_file: Optional[Path] = None  # None = KEYSDIR/DOMAIN/ARCSELECTOR.key
    arc_headers: Tuple[str, ...] = ("from", "to", "cc", "subject", "date", "message-id", "reply-to",
                                    "in-reply-to", "references", "mime-version", "content-type",
                                    "content-transfer-encoding", "list-id", "list-post", "list-unsubscribe",
                                    "list-subscribe", "list-help", "list-archive", "list-owner",
                                    "dkim-signature")  # the ARC-Message-Signature's h= names, when present


@dataclass(frozen=True)
class SPFSettings:
    enabled: bool = True
    time_limit: float = 20.0


@dataclass(frozen=True)
class DMARCSettings:
    enabled: bool = True
    reject_action: str = "reject"  # "reject" | "score" | "none"
    quarantine_score: float = 5.0
    quarantine_header: str = "X-DMARC-Quarantine"
    undetermined_author_action: str = "reject"  # "reject" | "accept"
    trusted_arc_sealers: Tuple[str, ...] = ()


@dataclass(frozen=True)
class DNSSettings:
    nameservers: Tuple[str, ...] = ()
    port: int = 53
    timeout: float = 3.0
    zone_file: Optional[Path] = None
    cache_size: int = 10000
    max_cache_ttl: int = 86400
    negative_cache_ttl: int = 300
    max_lookups_per_message: int = 30
    cache_file: Optional[Path] = None


@dataclass(frozen=True)
class LoggingSettings:
    activity_log: Optional[Path] = None
    log_level: str = "INFO"
    activity_log_max_bytes: int = 10 * 1024 * 1024  # rotate before the file passes this size; 0 = never
    activity_log_backups: int = 5


@dataclass(frozen=True)
class MetricsSettings:
    listen: Optional[Tuple[str, int]] = None  # (host, port) of the Prometheus endpoint; None = off


@dataclass(frozen=True)
class SubmissionSettings:
    """[Submission]: SMTP AUTH and STARTTLS on the submission listener, and the receivers' handler threads."""

    credentials_file: Optional[Path] = None
    tls_certificate: Optional[Path] = None
    tls_key: Optional[Path] = None
    require_tls_for_auth: bool = True
    handler_threads: int = 8


@dataclass(frozen=True)
class Settings:
    """Everything salmon-dkim is configured with, checked and frozen."""

    signing: SigningSettings = SigningSettings()
    verification: VerificationSettings = VerificationSettings()
    lists: ListSettings = ListSettings()
    dns: DNSSettings = DNSSettings()
    logging: LoggingSettings = LoggingSettings()
    source: Optional[Path] = None
    submission: SubmissionSettings = SubmissionSettings()
    metrics: MetricsSettings = MetricsSettings()
    spf: SPFSettings = SPFSettings()
    dmarc: DMARCSettings = DMARCSettings()
