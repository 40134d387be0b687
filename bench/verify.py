"""Messages verified per second: salmon_dkim's Verifier next to a raw RSA verify and to dkimpy ``dkim.verify``.

Run: .venv/bin/python bench/verify.py [--seconds 0.5]
The baseline is one RSA-2048 signature checked through ``cryptography`` (OpenSSL) over
the same message bytes, measured in the same run; the target (issue 10) is a 3 KB
RSA-2048 message verified, key cached, in at most 3x that time.
3 KB and 1 MB messages of plain prose, relaxed/relaxed, RSA-2048 and Ed25519
signatures (signed once, by dkimpy for RSA and by salmon_dkim.core.signer for
Ed25519), keys from the test
zone file.  dkimpy gets a dnsfunc returning the record, so neither side pays
for DNS; our Verifier keeps its parsed-key cache between messages, as in a
running server.  dkimpy verifies Ed25519 only with PyNaCl installed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from salmon_dkim.config import Settings
from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.keys import load_private_key
from salmon_dkim.core.dkim import dkim_sign
from salmon_dkim.core.verifier import Verifier

KEYS = Path(__file__).resolve().parent.parent / "tests" / "data" / "keys"
ZONE = KEYS / "keys.zone"
HEADERS = (b"From: Alice Example <alice@example.com>\r\nTo: Bob <bob@example.net>\r\n"
           b"Subject: Benchmark\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n")
LINE = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"


def make_message(size: int) -> bytes:
    return HEADERS + LINE * max(1, (size - len(HEADERS)) // len(LINE))


def private_key(name: str):
    folder = Path(tempfile.mkdtemp())
    path = folder / name
    shutil.copyfile(KEYS / name, path)
    os.chmod(path, 0o600)
    try:
        return load_private_key(path)
    finally:
        shutil.rmtree(folder)


def sign(message: bytes, algorithm: str) -> bytes:
    if algorithm == "rsa":
        key = (KEYS / "example.com.rsa2048.key").read_bytes()
        return dkim.sign(message, b"s1", b"example.com", key, canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + message
    return dkim_sign(message, "example.com", "ed1", private_key("example.com.ed25519.key")) + message


def rate(function, seconds: float, repeat: int = 3) -> float:
    """Calls per second, the best of ``repeat`` runs of about ``seconds`` each (the machine is shared)."""
    best = 0.0
    for _ in range(repeat):
        count, start = 0, time.perf_counter()
        while True:
            function()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and count >= 3:
                break
        best = max(best, count / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per run (best of 3 is shown)")
    args = parser.parse_args()
    resolver = ZoneResolver(ZONE)
    verifier = Verifier(Settings(), resolver)

    def dnsfunc(name, timeout=5):
        return resolver.txt(name.decode().rstrip("."))[0]

    raw_key = serialization.load_pem_private_key((KEYS / "example.com.rsa2048.key").read_bytes(), None)
    print(f"{'message':<8} {'key':<8} {'salmon_dkim/s':>14} {'raw RSA/s':>10} {'x raw':>7} {'dkimpy/s':>10} "
          f"{'vs dkimpy':>9}")
    for label, size in (("3 KB", 3 * 1024), ("1 MB", 1024 * 1024)):
        for algorithm, key_label in (("rsa", "RSA-2048"), ("ed25519", "Ed25519")):
            signed = sign(make_message(size), algorithm)
            [result] = verifier.verify(signed).results
            assert result.result == "pass", result.reason
            ours = rate(lambda: verifier.verify(signed), args.seconds)
            signature = raw_key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
            public = raw_key.public_key()
            raw = rate(lambda: public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256()), args.seconds)
            try:
                assert dkim.verify(signed, dnsfunc=dnsfunc)
                theirs = rate(lambda: dkim.verify(signed, dnsfunc=dnsfunc), args.seconds)
                cells = f"{theirs:>10.0f} {ours / theirs:>8.1f}x"
            except (ImportError, AssertionError, dkim.DKIMException):
                cells = f"{'n/a':>10} {'':>9}"
            print(f"{label:<8} {key_label:<8} {ours:>14.0f} {raw:>10.0f} {raw / ours:>6.2f}x {cells}")
            if (label, algorithm) == ("3 KB", "rsa"):
                target = raw / ours
            sys.stdout.flush()
    print(f"\ntarget: a 3 KB RSA-2048 message verified within 3x a raw RSA verify: {target:.2f}x "
          f"{'met' if target <= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
