"""Read salmon_dkim.ini into frozen, typed settings.

The file is read with configobj and checked against ``salmon_dkim.spec`` with
validate.  Every problem stops loading with one line naming the file, the
option and what is wrong.  The resulting :class:`Settings` is passed to the
core explicitly; no module reads configuration on its own.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import ssl
import stat
from pathlib import Path
from types import MappingProxyType
from typing import Optional, Tuple, Union

from configobj import ConfigObj, ConfigObjError, flatten_errors, get_extra_values
from validate import Validator, VdtTypeError, is_float

from salmon_dkim.config.settings import (DMARCSettings, DNSSettings, DomainKeys, IPNetwork, ListSettings,
                                         LoggingSettings, MetricsSettings, Settings, SigningSettings, SPFSettings,
                                         SubmissionSettings, VerificationSettings)
from salmon_dkim.core.authres import write as write_authres
from salmon_dkim.core.keyfetch import DOMAIN as DNS_LABELS
from salmon_dkim.core.message import FIELD_NAME, AddressError, domain_name
from salmon_dkim.dns.resolver import DNSError, ZoneResolver

SPEC_PATH = Path(__file__).with_name("salmon_dkim.spec")


class ConfigError(Exception):
    """A configuration file that cannot be used; str() is the one-line reason."""


def _finite_float(value, min=None, max=None) -> float:  # noqa: A002 (validate's argument names)
    """validate's float without nan and inf: a nan timeout never times out, a nan score never compares."""
    number = is_float(value, min, max)
    if not math.isfinite(number):
        raise VdtTypeError(value)
    return number


_VALIDATOR = Validator({"float": _finite_float})  # one, so each check string of the spec is parsed once


def load_settings(path: Union[str, os.PathLike, None] = None, *,
                  check_key_files: bool = True) -> Settings:
    """Read and check ``path``; with no path, every option takes its default.

    Relative paths in the file are taken from the file's own folder; without a file
    there is no activity log.
    Raises ConfigError with a one-line message naming file, option and problem.
    """
    name = str(path) if path is not None else "<defaults>"
    try:
        return _load(path, name, check_key_files)
    except ConfigError as exc:  # names and values come from the file: no line break of theirs gets out
        raise ConfigError(_one_line(str(exc))) from None


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")  # tab is white space; the rest breaks lines or paths


def _one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _load(path, name: str, check_key_files: bool) -> Settings:
    try:
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{name}: no such configuration file")
        raw = ConfigObj(infile=str(path) if path is not None else [],
                        configspec=str(SPEC_PATH), file_error=True,
                        raise_errors=True, encoding="utf-8", interpolation=False)
    except ConfigObjError as exc:
        line = f" ({exc.line.strip()[:60]!r})" if getattr(exc, "line", "") else ""
        raise ConfigError(f"{name}: cannot be parsed: {exc}{line}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    _check(raw, name)
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    return _build(raw, name, base, check_key_files, Path(path).resolve() if path is not None else None)


def _where(sections, key, section: bool = False) -> str:
    parts = [f"[{s}]" if i == 0 else f"[[{s}]]" for i, s in enumerate(sections)]
    if key:
        parts.append(f"[{key}]" if not sections else f"[[{key}]]" if section else key)
    return " ".join(parts)


def _check(raw: ConfigObj, name: str) -> None:
    results = raw.validate(_VALIDATOR, preserve_errors=True)
    if results is not True:
        for sections, key, error in flatten_errors(raw, results):
            if key is None:
                raise ConfigError(f"{name}: {_where(sections, '')}: section is missing or malformed")
            if isinstance(_spec(raw.configspec, sections).get(key), dict):
                raise ConfigError(f"{name}: {key}: is a section, written here as an option; "
                                  f"write it as {_where(sections, key, section=True)} on a line of its own")
            if error is False:
                raise ConfigError(f"{name}: {_where(sections, key)}: required option is missing")
            raise ConfigError(f"{name}: {_where(sections, key)}: {_explain(raw, sections, key, error)}")
    for sections, key in get_extra_values(raw):
        if isinstance(_get(raw, sections + (key,)), dict):
            raise ConfigError(f"{name}: {_where(sections, key, section=True)}: unknown section")
        home = [s for s, options in raw.configspec.items() if isinstance(options, dict) and key in options]
        if not sections and home:
            raise ConfigError(f"{name}: {key}: is an option of [{home[0]}], written above every section; "
                              f"move it under [{home[0]}]")
        raise ConfigError(f"{name}: {_where(sections, key)}: unknown option")
    for sections, key, value in _values(raw):
        if _CONTROL.search(value):
            raise ConfigError(f"{name}: {_where(sections, key)}: {value[:60]!r} holds a control character; "
                              "remove it")


def _values(section, path=()):
    """(sections, option, text) of every text value in the file, list items one by one."""
    for key, value in section.items():
        if isinstance(value, dict):
            yield from _values(value, path + (key,))
        else:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, str):
                    yield path, key, item


def _spec(spec, path):
    """The spec of the section at path: a named subsection's spec is its section's __many__."""
    for part in path:
        spec = spec[part] if part in spec else spec["__many__"]
    return spec


_EXPECTED = {"boolean": "Yes or No", "integer": "a whole number", "float": "a number",
             "option": "one of", "force_list": "a comma-separated list", "string": "text"}


def _explain(raw: ConfigObj, sections, key, error) -> str:
    """validate's messages say nothing of what was wanted: say it."""
    message = str(error).rstrip(".")
    spec_section = _spec(raw.configspec, sections)
    spec = spec_section.get(key) or spec_section.get("__many__", "")
    kind, _, args = spec.partition("(")
    value = _get(raw, sections).get(key)
    limits = dict(re.findall(r"\b(min|max)=([-\d.]+)", args))
    if "too small" in message and "min" in limits:
        return f"{value!r} is too small; the least allowed is {limits['min']}"
    if "too big" in message and "max" in limits:
        return f"{value!r} is too big; the most allowed is {limits['max']}"
    if "wrong type" not in message and "unacceptable" not in message:
        return message
    wanted = _EXPECTED.get(kind, kind)
    if kind == "option":
        choices = args.rsplit(", default", 1)[0].replace('"', "").split(", ")
        wanted += " " + ", ".join(repr(c) for c in choices)
    return f"{value!r} is not valid here; expected {wanted}"


def _get(raw, path):
    for part in path:
        raw = raw[part]
    return raw


def _networks(values, name, option) -> Tuple[IPNetwork, ...]:
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {option}: {value!r} is not an IP address or CIDR network") from None
    return tuple(nets)


def _path(base: Path, value: str) -> Optional[Path]:
    if not value:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _shown(path: Path) -> str:
    """A path as a command typed here would give it: relative to the current folder when below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system, a folder that cannot be entered
        return False


def _file_path(base: Path, value: str, name: str, option: str) -> Optional[Path]:
    """A file we write (log, cache, credentials): a folder in its place is an error now, not at the first write."""
    path = _path(base, value)
    try:
        folder = path is not None and path.is_dir()
    except OSError as exc:  # a name too long for the file system
        raise ConfigError(f"{name}: {option}: {str(path)[:80]!r} cannot be used: {exc.strerror}") from None
    if folder:
        raise ConfigError(f"{name}: {option}: {path} is a folder; name a file in it")
    return path


def _selector(value: str, name: str, where: str) -> str:
    """A selector as DNS is asked for it (RFC 6376 section 3.1): labels of letters, digits, - and _."""
    if not value.isascii() or not DNS_LABELS.fullmatch(value):
        raise ConfigError(f"{name}: {where}: {value[:60]!r} is not a selector; use DNS labels "
                          "(letters, digits, hyphens), e.g. s2026")
    return value


def _domain(value: str, name: str, where: str) -> str:
    try:
        return domain_name(value)
    except AddressError:
        raise ConfigError(f"{name}: {where}: {value[:60]!r} is not a domain name") from None


def _field_name(value: str, name: str, option: str) -> str:
    """A header field name: anything else could not be signed or written (RFC 5322 section 2.2)."""
    if not value.isascii() or not FIELD_NAME.fullmatch(value.encode("ascii")):
        raise ConfigError(f"{name}: {option}: {value[:60]!r} is not a header field name "
                          "(printable ASCII without spaces or colons, e.g. X-DKIM-Score)")
    return value


def _authserv_id(value: str, name: str) -> str:
    authserv_id = value or socket.getfqdn()
    try:
        write_authres(authserv_id, [])  # the one rule for what our Authentication-Results can carry
    except ValueError:
        where = "" if value else " (this host's name, as AuthservId is empty)"
        raise ConfigError(f"{name}: [Verification] AuthservId: {authserv_id[:60]!r}{where} cannot be written in "
                          "Authentication-Results: it must be a token, without spaces, @, ; or quotes "
                          "(RFC 8601 section 2.2), e.g. mx.example.com") from None
    return authserv_id


def _domain_keys(domain, selectors, key_files, include_subdomains, keys_dir, base, name, where,
                 check_key_files, enabled=True, lifecycle=False, domainkeys=(False, "nofws"),
                 selectors_option: str = "Selectors") -> DomainKeys:
    domain = _domain(domain, name, where)
    selectors = [_selector(sel, name, f"{where} {selectors_option}".strip()) for sel in selectors]
    if key_files and len(key_files) != len(selectors):
        raise ConfigError(f"{name}: {where} KeyFiles: gives {len(key_files)} files for "
                          f"{len(selectors)} selectors; give one per selector or none")
    # an empty entry keeps that selector's usual place
    files = tuple(_path(base, f) or keys_dir / domain / f"{sel}.key"
                  for sel, f in zip(selectors, key_files or [""] * len(selectors)))
    if check_key_files:
        for sel, f in zip(selectors, files):
            # the lifecycle moves a key never published to KEYSDIR/retired/ (salmon-dkim keys lists it)
            if not _is_file(f) and not (lifecycle and _is_file(keys_dir / "retired" / domain / f"{sel}.key")):
                laid_out = f.name == f"{sel}.key" and f.parent.name == domain  # as keygen lays keys out
                fix = (f"create it with: salmon-dkim keygen {domain} --selector {sel} --keys-dir {_shown(f.parent.parent)}"
                       if laid_out else "check KeyFiles")
                raise ConfigError(f"{name}: {where}: key file {f} for selector {sel!r} is missing; {fix}")
    return DomainKeys(domain, tuple(selectors), files, include_subdomains, enabled, *domainkeys)


def _build(raw: ConfigObj, name: str, base: Path, check_key_files: bool, source: Optional[Path]) -> Settings:
    s, v, d, dk, lg = (raw["Signing"], raw["Verification"], raw["DNS"],
                       raw["DomainKeys"], raw["Logging"])
    keys_dir = _path(base, s["KeysDir"])
    if keys_dir is None:
        raise ConfigError(f"{name}: [Signing] KeysDir: is empty; name the folder of the keys, e.g. keys")
    domains = {}
    # DomainKeys signing: [Signing] gives the default, a [[domain]] that says otherwise wins
    dk_default = (s["SignDomainKeys"], s["DomainKeysCanonicalization"])
    for domain, entry in raw["Domains"].items():
        where = f"[Domains] [[{domain}]]"
        dk_signing = tuple(default if own is None else own for own, default in
                           zip((entry["SignDomainKeys"], entry["DomainKeysCanonicalization"]), dk_default))
        keys = _domain_keys(domain, entry["Selectors"], entry["KeyFiles"], entry["IncludeSubdomains"],
                            keys_dir, base, name, where, check_key_files, entry["Enabled"],
                            s["RequirePublishedKeys"], dk_signing)
        if keys.domain in domains:
            raise ConfigError(f"{name}: {where}: {keys.domain} is in [Domains] twice; keep one")
        domains[keys.domain] = keys
    default = None
    if s["DefaultDomain"] or s["DefaultSelectors"]:
        if not (s["DefaultDomain"] and s["DefaultSelectors"]):
            raise ConfigError(f"{name}: [Signing] DefaultDomain and DefaultSelectors go together; "
                              "set both or neither")
        _domain(s["DefaultDomain"], name, "[Signing] DefaultDomain")
        default = _domain_keys(s["DefaultDomain"], s["DefaultSelectors"], [], False, keys_dir, base,
                               name, "[Signing] DefaultSelectors", check_key_files,
                               lifecycle=s["RequirePublishedKeys"], domainkeys=dk_default, selectors_option="")
    header_canon, body_canon = s["Canonicalization"].split("/")
    headers = tuple(_field_name(h, name, "[Signing] Headers").lower() for h in s["Headers"])
    if "from" not in headers:
        raise ConfigError(f"{name}: [Signing] Headers: must include 'from' (RFC 6376 section 5.4)")
    signing = SigningSettings(
        enabled=s["Enabled"], keys_dir=keys_dir, domains=MappingProxyType(domains),
        default=default,
        sender_selectors=MappingProxyType({k.lower(): _selector(val, name, f"[SenderSelectors] {k}")
                                           for k, val in raw["SenderSelectors"].items()}),
        skip_senders=tuple(x.lower() for x in s["SkipSenders"]),
        headers=headers, oversign_headers=tuple(
            _field_name(h, name, "[Signing] OversignHeaders").lower() for h in s["OversignHeaders"]),
        header_canon=header_canon, body_canon=body_canon,
        expire_seconds=int(s["ExpireDays"] * 86400), body_length_tag=s["BodyLengthTag"],
        max_message_size=s["MaxMessageSize"], sign_for=s["SignFor"],
        require_published_keys=s["RequirePublishedKeys"],
        shared_signature=s["SharedSignature"], pending_key_days=s["PendingKeyDays"],
        retire_after_days=s["RetireAfterDays"], pending_check_seconds=s["PendingKeyCheckSeconds"],
        active_check_seconds=s["ActiveKeyCheckSeconds"],
        sign_domainkeys=s["SignDomainKeys"], domainkeys_canon=s["DomainKeysCanonicalization"],
        domainkeys_headers=tuple(h.lower() for h in s["DomainKeysHeaders"] if h))
    verification = VerificationSettings(
        enabled=v["Enabled"], authserv_id=_authserv_id(v["AuthservId"], name),
        max_signatures=v["MaxSignatures"], clock_drift=v["ClockDrift"],
        min_key_bits=v["MinKeyBits"], allow_sha1=v["AllowSHA1"],
        honor_body_length=v["HonorBodyLength"], skip_authenticated=v["SkipAuthenticated"],
        skip_trusted_ips=v["SkipTrustedIPs"],
        trusted_ips=_networks(v["TrustedIPs"], name, "[Verification] TrustedIPs"),
        white_list_ips=_networks(v["WhiteListIPs"], name, "[Verification] WhiteListIPs"),
        authenticated_peers=_networks(v["AuthenticatedPeers"], name,
                                      "[Verification] AuthenticatedPeers"),
        authenticated_header=v["AuthenticatedHeader"] and _field_name(
            v["AuthenticatedHeader"], name, "[Verification] AuthenticatedHeader"),
        approved_domains=tuple(x.lower().rstrip(".") for x in v["ApprovedDomains"]),
        approved_score=v["ApprovedScore"], pass_score=v["PassScore"], fail_score=v["FailScore"],
        reject_on_fail=v["RejectOnFail"], reject_score=v["RejectScore"],
        score_header=v["ScoreHeader"] and _field_name(v["ScoreHeader"], name, "[Verification] ScoreHeader"),
        close_connection_on_reject=v["CloseConnectionOnReject"],
        temperror_action=v["TempErrorAction"], internal_error_action=v["InternalErrorAction"],
        adsp=v["ADSP"], adsp_action=v["ADSPAction"],
        adsp_score=v["ADSPScore"], max_message_size=v["MaxMessageSize"],
        verify_domainkeys=v["VerifyDomainKeys"])
    lists = ListSettings(
        strip_sigs_from_list_mail=dk["StripSigsFromListMail"], sign_list_mail=dk["SignListMail"],
        arc_seal=dk["ARCSeal"], arc_verify=dk["ARCVerify"], max_arc_instances=dk["MaxARCInstances"],
        dmarc_mitigation=dk["DMARCMitigation"], **_arc_options(dk, keys_dir, base, name, check_key_files))
    zone = _path(base, d["ZoneFile"])
    if zone is not None and not _is_file(zone):
        raise ConfigError(f"{name}: [DNS] ZoneFile: {zone} does not exist or is not a file")
    if zone is not None:
        try:
            ZoneResolver(zone)  # read now: a file that is not a zone stops start-up, not every lookup
        except DNSError as exc:
            raise ConfigError(f"{name}: [DNS] ZoneFile: {exc}") from None
    for ns in d["Nameservers"]:
        try:
            ipaddress.ip_address(ns)
        except ValueError:
            raise ConfigError(f"{name}: [DNS] Nameservers: {ns!r} is not an IP address") from None
    dns = DNSSettings(
        nameservers=tuple(d["Nameservers"]), port=d["Port"], timeout=d["Timeout"], zone_file=zone,
        cache_size=d["CacheSize"] if v["UseCache"] else 0, max_cache_ttl=d["MaxCacheTTL"],
        negative_cache_ttl=d["NegativeCacheTTL"],
        max_lookups_per_message=d["MaxLookupsPerMessage"],
        cache_file=_file_path(base, d["CacheFile"], name, "[DNS] CacheFile"))
    # Without a file there is no folder of ours to write the log in: log only when a file asks for it.
    activity_log = _file_path(base, lg["ActivityLog"], name, "[Logging] ActivityLog") if source else None
    logging_ = LoggingSettings(activity_log=activity_log, log_level=lg["LogLevel"],
                               activity_log_max_bytes=lg["ActivityLogMaxBytes"],
                               activity_log_backups=lg["ActivityLogBackups"])
    metrics = MetricsSettings(listen=_listen_address(raw["Metrics"]["Listen"], name, "[Metrics] Listen"))
    spf = SPFSettings(enabled=raw["SPF"]["Enabled"], time_limit=raw["SPF"]["TimeLimit"])
    dm = raw["DMARC"]
    dmarc = DMARCSettings(enabled=dm["Enabled"], reject_action=dm["RejectAction"],
                          quarantine_score=dm["QuarantineScore"], quarantine_header=dm["QuarantineHeader"],
                          undetermined_author_action=dm["UndeterminedAuthorAction"],
                          trusted_arc_sealers=tuple(x.lower().rstrip(".") for x in dm["TrustedARCSealers"] if x))
    return Settings(signing, verification, lists, dns, logging_, metrics=metrics, spf=spf, dmarc=dmarc,
                    source=source,
                    submission=_submission(raw["Submission"], name, base, check_key_files))


def _arc_options(dk, keys_dir: Path, base: Path, name: str, check_files: bool) -> dict:
    """[DomainKeys] ARCDomain, ARCSelector, ARCKeyFile, ARCHeaders; the key file must exist when named."""
    domain = dk["ARCDomain"].strip().lower().rstrip(".")
    selector, key_file = dk["ARCSelector"].strip(), _path(base, dk["ARCKeyFile"])
    headers = tuple(h.strip().lower() for h in dk["ARCHeaders"] if h.strip())
    if "from" not in headers:
        raise ConfigError(f"{name}: [DomainKeys] ARCHeaders: must include 'from' (RFC 8617 section 4.1.2 "
                          "signs as DKIM does)")
    if "arc-seal" in headers:
        raise ConfigError(f"{name}: [DomainKeys] ARCHeaders: must not include 'arc-seal' (RFC 8617 section 4.1.2)")
    if key_file is not None and not selector:
        raise ConfigError(f"{name}: [DomainKeys] ARCKeyFile: needs ARCSelector (the s= its public key is "
                          "published under)")
    if check_files and selector:
        path = key_file or (keys_dir / domain / f"{selector}.key" if domain else None)
        if path is not None and not path.is_file():
            raise ConfigError(f"{name}: [DomainKeys] ARCSelector: key file {path} for ARC selector {selector!r} "
                              f"is missing; create it with salmon-dkim keygen, or set ARCKeyFile")
    return {"arc_domain": domain, "arc_selector": selector, "arc_key_file": key_file, "arc_headers": headers}


def _submission(sub, name: str, base: Path, check_files: bool) -> SubmissionSettings:
    """[Submission]; with ``check_files`` the TLS certificate and key are loaded now, as the receivers will."""
    certificate, key = _path(base, sub["TLSCertificate"]), _path(base, sub["TLSKey"])
    if (certificate is None) != (key is None):
        raise ConfigError(f"{name}: [Submission] TLSCertificate and TLSKey go together; set both or neither")
    if check_files and certificate is not None:
        for option, path in (("TLSCertificate", certificate), ("TLSKey", key)):
            if not _is_file(path):
                raise ConfigError(f"{name}: [Submission] {option}: {path} does not exist")
        mode = stat.S_IMODE(os.stat(key).st_mode)
        if mode & stat.S_IROTH:
            raise ConfigError(f"{name}: [Submission] TLSKey: {key} is readable by others (mode {mode:04o}); "
                              f"run chmod 600 on it")
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certificate, key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{name}: [Submission] TLSKey: {key} and TLSCertificate {certificate} "
                              f"cannot be used together: {exc.strerror or exc}") from None
    return SubmissionSettings(
        credentials_file=_file_path(base, sub["CredentialsFile"], name, "[Submission] CredentialsFile"),
        tls_certificate=certificate, tls_key=key,
        require_tls_for_auth=sub["RequireTLSForAuth"], handler_threads=sub["HandlerThreads"])


def _listen_address(value: str, name: str, option: str) -> Optional[Tuple[str, int]]:
    """HOST:PORT (IPv6 in brackets) as (host, port); empty is None."""
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or ":" in host and "[" not in value:
        raise ConfigError(f"{name}: {option}: {value!r} is not HOST:PORT; write for instance "
                          "127.0.0.1:9325, or [::1]:9325 for IPv6")
    return host, int(port)
