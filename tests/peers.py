"""Independent DKIM implementations, as functions over bytes: the peers our tests trust.

Mail::DKIM (perl, libmail-dkim-perl; RSA only in Debian 12) and OpenDKIM
(``opendkim -x CONF -t FILE``, test mode; RSA and Ed25519).  Public keys come
from a zone file (tests/data/keys/keys.zone) instead of DNS: Mail::DKIM's DNS
query is replaced by a lookup in the zone file, OpenDKIM reads a
``TestPublicKeys`` file written from it.  Messages are handed over with CRLF
line endings.  Each call works in its own temporary folder.

Result words are the peer's own: Mail::DKIM says pass, fail, invalid,
temperror, none; OpenDKIM says pass, fail, neutral, permerror, temperror,
policy, none (taken from the Authentication-Results header it would add).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, NamedTuple, Sequence, Tuple, Union

import dns.name
import dns.rdatatype
import dns.zonefile
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key

OPENDKIM = "/usr/sbin/opendkim"
PathLike = Union[str, "os.PathLike[str]"]
Canon = Union[str, Tuple[str, str]]


class PeerResult(NamedTuple):
    """One signature as a peer saw it."""

    result: str
    detail: str
    domain: str
    selector: str
    algorithm: str


class PeerError(RuntimeError):
    """The peer program itself failed (not a verification result)."""


def have_mail_dkim() -> bool:
    return subprocess.run(["perl", "-MMail::DKIM::Verifier", "-e1"], capture_output=True).returncode == 0


def have_opendkim() -> bool:
    return os.access(OPENDKIM, os.X_OK)


def crlf(message: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", message)


def _canon(canon: Canon) -> str:
    return canon if isinstance(canon, str) else "/".join(canon)


# ---------------------------------------------------------------- Mail::DKIM

_PERL = r"""
use strict; use warnings;
use JSON::PP; use Net::DNS; use Net::DNS::ZoneFile; use Mail::DKIM::DNS;
use Mail::DKIM::Verifier; use Mail::DKIM::Signer; use Mail::DKIM::ARC::Verifier;
my $mode = shift @ARGV;
my %txt;
sub load_zone {
    my $z = Net::DNS::ZoneFile->new(shift);
    while (my $rr = $z->read) { push @{$txt{lc $rr->owner}}, $rr if $rr->type eq 'TXT' }
}
{   no warnings 'redefine';
    # keys from the zone file: a name that is not there does not exist
    *Mail::DKIM::DNS::query = sub {
        my ($name, $type) = @_; $name = lc $name; $name =~ s/\.$//;
        my @rrs = ($type eq 'TXT' && $txt{$name}) ? @{$txt{$name}} : ();
        $@ = @rrs ? 'NOERROR' : 'NXDOMAIN';
        return @rrs;
    };
}
sub slurp { open(my $f, '<:raw', shift) or die "$!"; local $/; return <$f> }
my $out;
if ($mode eq 'verify') {
    load_zone(shift @ARGV);
    $out = [];
    for my $file (@ARGV) {
        my $v = Mail::DKIM::Verifier->new(); $v->PRINT(slurp($file)); $v->CLOSE;
        push @$out, [map { [$_->result // 'none', $_->result_detail // '', $_->domain // '',
                            $_->selector // '', $_->algorithm // ''] } $v->signatures];
    }
} elsif ($mode eq 'arc-verify') {
    load_zone(shift @ARGV);
    $out = [];
    for my $file (@ARGV) {
        my $v = Mail::DKIM::ARC::Verifier->new(); $v->PRINT(slurp($file)); $v->CLOSE;
        push @$out, [$v->result // 'none', $v->result_detail // ''];
    }
} elsif ($mode eq 'sign') {
    my ($domain, $selector, $key, $canon, $headers, $file) = @ARGV;
    my $s = Mail::DKIM::Signer->new(Algorithm => 'rsa-sha256', Method => $canon,
                                    Domain => $domain, Selector => $selector, KeyFile => $key,
                                    ($headers ne '' ? (Headers => $headers) : ()));
    $s->PRINT(slurp($file)); $s->CLOSE;
    $out = {signature => $s->signature->as_string};
} else { die "unknown mode $mode" }
print JSON::PP->new->canonical->encode($out);
"""


def _perl(mode: str, args: Sequence[str], messages: Sequence[bytes]):
    with tempfile.TemporaryDirectory(prefix="mail-dkim-") as tmp:
        files = []
        for i, message in enumerate(messages):
            path = Path(tmp) / f"m{i}.eml"
            path.write_bytes(crlf(message))
            files.append(str(path))
        proc = subprocess.run(["perl", "-e", _PERL, mode, *map(str, args), *files],
                              capture_output=True)
    if proc.returncode != 0:
        raise PeerError(f"Mail::DKIM {mode} failed: {proc.stderr.decode(errors='replace')}")
    return json.loads(proc.stdout)


def mail_dkim_verify_many(messages: Sequence[bytes], zone_file: PathLike) -> List[List[PeerResult]]:
    """Each message verified by Mail::DKIM in one perl run: its signatures, top first."""
    return [[PeerResult(*sig) for sig in sigs] for sigs in _perl("verify", [zone_file], messages)]


def mail_dkim_verify_details(message: bytes, zone_file: PathLike) -> List[PeerResult]:
    return mail_dkim_verify_many([message], zone_file)[0]


def mail_dkim_verify(message: bytes, zone_file: PathLike) -> List[str]:
    """Mail::DKIM's result word for each signature, top first ([] when unsigned)."""
    return [sig.result for sig in mail_dkim_verify_details(message, zone_file)]


def mail_dkim_arc_verify(message: bytes, zone_file: PathLike) -> str:
    """Mail::DKIM::ARC::Verifier's result for the chain: pass, fail or none."""
    return _perl("arc-verify", [zone_file], [message])[0][0]


def mail_dkim_arc_verify_details(message: bytes, zone_file: PathLike) -> Tuple[str, str]:
    """(result, detail) of the ARC chain, as Mail::DKIM::ARC::Verifier says."""
    result, detail = _perl("arc-verify", [zone_file], [message])[0]
    return result, detail


def mail_dkim_sign(message: bytes, domain: str, selector: str, key_path: PathLike,
                   canon: Canon = "relaxed/relaxed", *, headers: Sequence[str] = ()) -> bytes:
    """The message (CRLF) with a Mail::DKIM rsa-sha256 signature on top.

    ``headers``: names to sign on top of Mail::DKIM's default list.
    """
    message = crlf(message)
    out = _perl("sign", [domain, selector, key_path, _canon(canon), ":".join(headers)], [message])
    signature = out["signature"].encode("ascii")
    return crlf(signature.rstrip(b"\r\n") + b"\n") + message


# ------------------------------------------------------------------ OpenDKIM

def _test_public_keys(zone_or_keys: PathLike, dest: Path) -> Path:
    """A TestPublicKeys file ("NAME TXT-DATA" per line) from a zone file, or the file as given."""
    text = Path(zone_or_keys).read_text(encoding="utf-8")
    if not re.search(r"\bIN\s+TXT\b|\bTXT\s", text):
        return Path(zone_or_keys)
    rrsets = dns.zonefile.read_rrsets(text, rdclass=None, default_ttl=3600, origin=dns.name.root,
                                      relativize=False)
    lines = []
    for rrset in rrsets:
        if rrset.rdtype == dns.rdatatype.TXT:
            for rdata in rrset:
                name = rrset.name.to_text(omit_final_dot=True)
                lines.append(f"{name} {b''.join(rdata.strings).decode('ascii')}\n")
    dest.write_text("".join(lines), encoding="ascii")
    return dest


def _opendkim(conf: dict, message: bytes, tmp: Path) -> str:
    conf = {"Syslog": "no", "RequireSafeKeys": "no", **conf}
    conf_path = tmp / "opendkim.conf"
    conf_path.write_text("".join(f"{k} {v}\n" for k, v in conf.items()), encoding="ascii")
    msg_path = tmp / "message.eml"
    msg_path.write_bytes(crlf(message))
    proc = subprocess.run([OPENDKIM, "-vv", "-x", str(conf_path), "-t", str(msg_path)],
                          capture_output=True, cwd=tmp)
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if proc.returncode != 0:
        raise PeerError(f"opendkim exited {proc.returncode}: {output}")
    return output


def _inserted(output: str, name: str) -> List[str]:
    """The values of the header fields opendkim -vv says it would insert."""
    return re.findall(rf"### INSHEADER: idx=\d+ hname='{name}' hvalue='(.*?)'\n", output, re.S)


def opendkim_results(message: bytes, zone_or_keys: PathLike) -> List[PeerResult]:
    """Each signature as OpenDKIM verified it, top first ([] when unsigned).

    Taken from the Authentication-Results header it would add; ``detail`` is
    its reason text.  ``zone_or_keys``: a zone file or a TestPublicKeys file.
    """
    with tempfile.TemporaryDirectory(prefix="opendkim-") as name:
        tmp = Path(name)
        keys = _test_public_keys(zone_or_keys, tmp / "public-keys")
        output = _opendkim({"Mode": "v", "TestPublicKeys": str(keys)}, message, tmp)
    inserted = _inserted(output, "Authentication-Results")
    if not inserted:
        if "message not signed" in output:
            return []
        raise PeerError(f"opendkim gave no verification result: {output}")
    results = []
    for part in inserted[0].split(";")[1:]:
        part = " ".join(part.split())
        m = re.match(r"dkim=(\w+)(.*)", part)
        if not m:
            continue
        rest = m.group(2)
        tag = lambda t: (re.search(rf"header\.{t}=(\S+)", rest) or [None, ""])[1]  # noqa: E731
        reason = re.search(r'reason="([^"]*)"|\(([^)]*)\)', rest)
        detail = (reason.group(1) or reason.group(2)) if reason else ""
        results.append(PeerResult(m.group(1), detail, tag("d"), tag("s"), tag("a")))
    return results


def opendkim_verify(message: bytes, zone_or_keys: PathLike) -> str:
    """OpenDKIM's verdict: "pass" when every signature passes, else the first other word.

    "none" for an unsigned message.
    """
    results = opendkim_results(message, zone_or_keys)
    if not results:
        return "none"
    failed = [r.result for r in results if r.result != "pass"]
    return failed[0] if failed else "pass"


def opendkim_sign(message: bytes, domain: str, selector: str, key_path: PathLike,
                  canon: Canon = "relaxed/relaxed", *, headers: Sequence[str] = ()) -> bytes:
    """The message (CRLF) with an OpenDKIM signature on top: rsa-sha256 or ed25519-sha256 by key type.

    ``headers``: the names to sign (OpenDKIM's SignHeaders) instead of its default list.
    """
    message = crlf(message)
    key = load_pem_private_key(Path(key_path).read_bytes(), password=None)
    algorithm = "ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa-sha256"
    with tempfile.TemporaryDirectory(prefix="opendkim-") as name:
        tmp = Path(name)
        key_copy = tmp / "signing.key"
        shutil.copyfile(key_path, key_copy)
        os.chmod(key_copy, 0o600)
        conf = {"Mode": "s", "Domain": domain, "Selector": selector, "KeyFile": str(key_copy),
                "Canonicalization": _canon(canon), "SignatureAlgorithm": algorithm}
        if headers:
            conf["SignHeaders"] = ",".join(headers)
        output = _opendkim(conf, message, tmp)
    inserted = _inserted(output, "DKIM-Signature")
    if not inserted:
        raise PeerError(f"opendkim did not sign: {output}")
    return crlf(f"DKIM-Signature: {inserted[0]}\n".encode("ascii")) + message


# ------------------------------------------------------- Mail::DKIM DomainKeys

_PERL_DK_SIGN = r"""
use strict; use warnings; use JSON::PP; use MIME::Base64;
use Mail::DKIM::Signer; use Mail::DKIM::DkSignature;
my $jobs = decode_json(do { local $/; <STDIN> });
my @out;
for my $job (@$jobs) {
    my $s = Mail::DKIM::Signer->new(KeyFile => $job->{key}, Policy => sub {
        my $signer = shift;
        $signer->add_signature(Mail::DKIM::DkSignature->new(Algorithm => 'rsa-sha1',
            Method => $job->{method}, Domain => $job->{domain}, Selector => $job->{selector},
            ($job->{headers} ? (Headers => $job->{headers}) : $job->{h} ? (Headers => $signer->headers) : ())));
        return;
    });
    $s->PRINT(decode_base64($job->{message})); $s->CLOSE;
    push @out, $s->signature->as_string;
}
print encode_json(\@out);
"""


def mail_dkim_dk_sign_many(jobs: Sequence[dict]) -> List[bytes]:
    """Each job's message (CRLF) with a Mail::DKIM DomainKey-Signature on top, in one perl run.

    A job: message, domain, selector, key_path, and optionally method ("nofws" or "simple",
    default "nofws"), h (default True: an h= tag listing every header; False: no h=) and headers
    (an h= value of our choosing, "from:to:to": Mail::DKIM presents the fields in that order).
    """
    payload = [{"message": base64.b64encode(crlf(j["message"])).decode("ascii"), "domain": j["domain"],
                "selector": j["selector"], "key": str(j["key_path"]), "method": j.get("method", "nofws"),
                "h": bool(j.get("h", True)), "headers": j.get("headers", "")} for j in jobs]
    proc = subprocess.run(["perl", "-e", _PERL_DK_SIGN], input=json.dumps(payload).encode("ascii"),
                          capture_output=True)
    if proc.returncode != 0:
        raise PeerError(f"Mail::DKIM DomainKeys sign failed: {proc.stderr.decode(errors='replace')}")
    return [crlf(sig.encode("ascii").rstrip(b"\r\n") + b"\n") + crlf(j["message"])
            for sig, j in zip(json.loads(proc.stdout), jobs)]


def mail_dkim_dk_sign(message: bytes, domain: str, selector: str, key_path: PathLike,
                      method: str = "nofws") -> bytes:
    """The message (CRLF) with a Mail::DKIM DomainKey-Signature (RFC 4870, rsa-sha1) on top."""
    return mail_dkim_dk_sign_many([{"message": message, "domain": domain, "selector": selector,
                                    "key_path": key_path, "method": method}])[0]


def mail_dkim_dk_verify(message: bytes, zone_file: PathLike) -> List[PeerResult]:
    """Mail::DKIM's verdict on each signature, DomainKey-Signature headers included, top first.

    Its words for DomainKeys: pass, fail, invalid (broken signature, bad key, or d= not the
    sender's domain: "invalid (bad identity)"), temperror, none.
    """
    return mail_dkim_verify_details(message, zone_file)
