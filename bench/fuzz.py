"""A fuzz campaign over the public surfaces that read message text (outside the normal test run).

Run: .venv/bin/python bench/fuzz.py [--inputs 100000] [--seed N] [--workers 2] [--out DIR]
Seeds are the messages in tests/data/messages, each also signed (RSA and
Ed25519, relaxed and simple, by us and by dkimpy), ARC-sealed, given our
Authentication-Results and forged ones.  Each input is a seed mutated a few
times (bytes flipped, tokens of the grammars inserted, ranges deleted,
doubled or repeated many times, seeds spliced, line endings changed) and goes
through Message and the mailbox parser, Verifier.verify, Signer.sign and a
verification of what it signed, authres.header_for/parse, authres.remove_ours,
and listmail.prepare_list_post (strip, sign, ARC-seal) with arc_result.  Checked:

- no exception escapes (and no internal error is reported or logged);
- every Verifier result is an RFC 8601 result word;
- the Authentication-Results we write reads back, with our own parser, as written;
- what remove_ours leaves holds no field claiming our authserv-id;
- what the Signer signed verifies (our signature: pass or policy).

Each finding is saved to --out with what went wrong; the count of inputs is printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import MappingProxyType
from typing import List, Optional, Tuple

import dkim

from salmon_dkim.config import DomainKeys, Settings
from salmon_dkim.core import authres, listmail
from salmon_dkim.core.arc import ARCSealer, arc_result
from salmon_dkim.core.dkim import dkim_sign
from salmon_dkim.core.keys import KeyStore, load_private_key
from salmon_dkim.core.message import AddressError, Message, MessageFormatError, parse_mailboxes, prepend
from salmon_dkim.core.results import RESULT_WORDS
from salmon_dkim.core.signer import Signer, SigningError
from salmon_dkim.core.verifier import Verifier
from salmon_dkim.dns.resolver import ZoneResolver

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "tests" / "data" / "keys"
MESSAGES = ROOT / "tests" / "data" / "messages"
ID = "mx.example.net"
TOKENS = [b"\r", b"\n", b"\r\n", b"\r\n ", b"\r\n\r\n", b" ", b"\t", b"(", b")", b"\\", b'"', b";", b"=", b":",
          b"@", b"<", b">", b",", b".", b"[", b"]", b"=?utf-8?q?", b"?=", b"=?utf-8?b?", b"\x00", b"\xff",
          "é".encode(), b"\xe2\x80\xa8", b"From: ", b"From: a@example.com\r\n", b"Sender: b@example.org\r\n",
          b"DKIM-Signature: ", b"DomainKey-Signature: ", b"Authentication-Results: ",
          ("Authentication-Results: " + ID + "; dkim=pass\r\n").encode(), b"ARC-Seal: i=1; cv=none; ",
          b"ARC-Message-Signature: i=1; ", b"ARC-Authentication-Results: i=1; ", b"List-Id: <l.example.com>\r\n",
          b"X-DKIM-Score: 9\r\n", b"v=1;", b"a=rsa-sha256;", b"a=ed25519-sha256;", b"b=", b"bh=", b"h=from:",
          b"d=example.com;", b"s=s1;", b"s=ed1;", b"l=0;", b"l=99999999999999999999;", b"x=1;", b"t=9999999999;",
          b"i=@example.com;", b"c=simple/relaxed;", b"q=dns/txt;", b"z=From:a|To:b;", b"dkim=", b"reason=\"",
          b"header.d=", b"smtp.mailfrom=", b"1", b"0", b"-", b"9" * 30]


class Campaign:
    """The keys, settings, signer and verifier the inputs go through, and the seeds."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
        keys = self.folder / "keys" / "example.com"
        keys.mkdir(parents=True)
        for name, src in (("s1.key", "example.com.rsa2048.key"), ("ed1.key", "example.com.ed25519.key")):
            shutil.copyfile(KEYS / src, keys / name)
            os.chmod(keys / name, 0o600)
        self.rsa, self.ed = load_private_key(keys / "s1.key"), load_private_key(keys / "ed1.key")
        base = Settings()
        entry = DomainKeys("example.com", ("s1", "ed1"), (keys / "s1.key", keys / "ed1.key"), True)
        self.settings = dataclasses.replace(
            base, signing=dataclasses.replace(base.signing, domains=MappingProxyType({"example.com": entry})),
            verification=dataclasses.replace(base.verification, authserv_id=ID, adsp=True))
        self.resolver = ZoneResolver(KEYS / "keys.zone")
        self.verifier = Verifier(self.settings, self.resolver)
        self.signer = Signer(self.settings, KeyStore(recheck_seconds=60))
        self.sealer = ARCSealer("example.com", "s1", self.rsa, ID)
        self.list_settings = dataclasses.replace(self.settings, lists=dataclasses.replace(base.lists, arc_seal=True))
        self.seeds = self._seeds()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _seeds(self) -> List[bytes]:
        plain = [p.read_bytes() for p in sorted(MESSAGES.glob("*.eml"))]
        seeds = list(plain)
        rsa_pem = (KEYS / "example.com.rsa2048.key").read_bytes()
        for message in plain:
            for key, selector in ((self.rsa, "s1"), (self.ed, "ed1")):
                for canon in (("relaxed", "relaxed"), ("simple", "simple"), ("relaxed", "simple")):
                    seeds.append(dkim_sign(message, "example.com", selector, key, canon=canon) + message)
            seeds.append(dkim.sign(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), b"s1", b"example.com",
                                   rsa_pem, canonicalize=(b"simple", b"relaxed")) + message)
            try:
                seeds.append(self.sealer.seal(self.signer.sign(message).message))
            except Exception:  # noqa: BLE001 (a seed that cannot be sealed is simply left out)
                pass
            report = self.verifier.verify(seeds[-1])
            seeds.append(prepend(seeds[-1], authres.header_for(ID, report)))
            seeds.append(b"Authentication-Results: (forged) " + ID.encode() + b"; dkim=pass\r\n" + seeds[-1])
        return seeds


def mutate(rng: random.Random, seeds: List[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        n = len(data)
        at = rng.randrange(n + 1)
        how = rng.randrange(10)
        if how == 0 and n:
            data[min(at, n - 1)] = rng.randrange(256)
        elif how in (1, 2, 3):
            data[at:at] = rng.choice(TOKENS)
        elif how == 4 and n:
            del data[at:at + rng.randrange(1, 64)]
        elif how == 5 and n:
            end = min(n, at + rng.randrange(1, 200))
            data[at:at] = data[at:end] * rng.choice((2, 3, 10, 100))
        elif how == 6:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data = data[:at] + other[cut:] if rng.random() < 0.5 else bytearray(other[:cut]) + data[at:]
        elif how == 7:
            data = bytearray(bytes(data).replace(b"\r\n", rng.choice((b"\n", b"\r", b"\r\r\n", b"\n\r"))))
        elif how == 8 and n:
            end = min(n, at + rng.randrange(1, 16))
            data[at:end] = bytes(data[at:end]).swapcase()
        elif how == 9:
            data[at:at] = rng.choice(TOKENS) * rng.choice((50, 500, 5000))
    return bytes(data)


class Finding(Exception):
    """What a check found wrong."""


class _Internal(logging.Handler):
    """Errors logged by the package while an input runs: an internal error is a finding too."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("salmon_dkim") and "activity log" not in record.getMessage():
            self.records.append(record.getMessage())


def as_written(clause: authres.Clause) -> authres.Clause:
    """A clause as our header can carry it: printable ASCII, the reason cut, no parentheses in a comment."""
    return dataclasses.replace(
        clause, reason=authres.printable(clause.reason, authres.REASON_LIMIT) if clause.reason else None,
        comment=re.sub(r"[()\\]", "", authres.printable(clause.comment)) if clause.comment else None,
        properties=tuple(dataclasses.replace(p, value=authres.printable(p.value)) for p in clause.properties))


def check(campaign: Campaign, data: bytes) -> None:
    """Every surface on one input; Finding (or any exception) for what must not happen."""
    try:
        message: Optional[Message] = Message.parse(data)
    except MessageFormatError:
        message = None
    lenient = Message.parse(data, lenient=True)
    for parsed in filter(None, (message, lenient)):
        parsed.authors, parsed.message_id  # noqa: B018 (computed for what they may raise)
        for name in (b"from", b"sender", b"to", b"reply-to"):
            for value in parsed.values(name):
                try:
                    parse_mailboxes(value)
                except AddressError:
                    pass
    report = campaign.verifier.verify(data)
    words = [r.result for r in report.results]
    if any(w not in RESULT_WORDS for w in words):
        raise Finding(f"result words {words}")
    if report.internal_error or any(r.internal for r in report.results):
        raise Finding(f"internal error: {report.internal_error or [r.reason for r in report.results]}")
    header = authres.header_for(ID, report)
    authserv_id, clauses = authres.parse(header.partition(b":")[2])
    wanted = [as_written(c) for c in authres.report_clauses(report)]
    if authserv_id != ID or clauses != wanted or authres.write(ID, clauses) != header:
        raise Finding(f"our header {header[:300]!r} reads back as {clauses} instead of {wanted}")
    cleaned = authres.remove_ours(data, ID, ["X-DKIM-Score"])
    for field_value in Message.parse(cleaned, lenient=True).values(b"authentication-results"):
        if authres.authserv_id_of(field_value) in (ID, None):
            raise Finding(f"remove_ours left {field_value[:80]!r}")
        try:
            authres.parse(field_value)
        except authres.AuthResError:
            pass
    try:
        signed = campaign.signer.sign(data, sender="alice@example.com")
    except SigningError as exc:
        raise Finding(f"SigningError with working keys: {exc}") from None
    if signed.signatures:
        top = campaign.verifier.verify(signed.message).results[:len(signed.signatures)]
        if any(r.result not in ("pass", "policy") for r in top):
            raise Finding(f"what we signed does not verify: {[(r.result, r.reason) for r in top]}")
    post = listmail.prepare_list_post(data, campaign.list_settings, "example.com", campaign.signer, campaign.sealer,
                                      resolver=campaign.resolver)
    arc, _ = arc_result(post, campaign.resolver, campaign.settings)
    if arc not in ("pass", "fail", "none", "temperror"):
        raise Finding(f"arc={arc}")


def work(args: Tuple[int, int, int, str]) -> Tuple[int, List[str]]:
    """Runs ``count`` inputs from ``seed``; returns (inputs run, findings)."""
    seed, count, worker, out = args
    logging.disable(logging.WARNING - 1)
    watcher = _Internal()
    logging.getLogger().addHandler(watcher)
    campaign = Campaign()
    rng, findings = random.Random(seed), []
    try:
        for i in range(count):
            data = mutate(rng, campaign.seeds)
            watcher.records.clear()
            try:
                check(campaign, data)
                if watcher.records:
                    raise Finding("logged: " + watcher.records[0])
            except Exception as exc:  # noqa: BLE001 (the point of a fuzz campaign)
                what = f"{type(exc).__name__}: {exc}"[:300]
                path = Path(out) / f"finding-{seed}-{i}.eml"
                path.write_bytes(data)
                path.with_suffix(".txt").write_text(what + "\n\n" + traceback.format_exc())
                findings.append(f"{path}: {what}")
    finally:
        campaign.close()
    return count, findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--out", default=tempfile.gettempdir() + "/salmon-dkim-fuzz",
                        help="folder for the inputs that found something")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    chunk = 1000
    jobs = [(args.seed * 100000 + i, min(chunk, args.inputs - i * chunk), i, args.out)
            for i in range((args.inputs + chunk - 1) // chunk)]
    started, done, findings = time.time(), 0, []
    with multiprocessing.Pool(args.workers) as pool:
        for count, found in pool.imap_unordered(work, jobs):
            done += count
            findings += found
            for line in found:
                print("FINDING", line)
            if done % 10000 < chunk:
                print(f"{done} inputs, {len(findings)} findings, {time.time() - started:.0f} s")
                sys.stdout.flush()
    print(f"\n{done} inputs (seed {args.seed}), {len(findings)} findings; inputs that found something are in "
          f"{args.out}")
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
