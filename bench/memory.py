"""Extra memory of verifying and of signing a large message, as a ratio to the message size.

Run: .venv/bin/python bench/memory.py [--mib 30]
Each case runs in a fresh process.  Printed: the peak of Python allocations
(tracemalloc) above what was held before the call, the peak resident size
above the resident size before the call (VmHWM, reset through
/proc/self/clear_refs where the kernel allows), each divided by the message
size, and what Python still holds after the result is dropped.  Targets
(issue 8): extra peak at most 1x the message size (plus the few MiB of blocks
the body is canonicalized in), nothing held afterwards.  Signing returns a new
message (signatures + the bytes given), so its peak includes that one copy.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from types import MappingProxyType

KEYS = Path(__file__).resolve().parent.parent / "tests" / "data" / "keys"
MIB = 1 << 20
SLACK = 4 * MIB  # the canonicalization blocks (core/canon.py BLOCK) a body is hashed in
HEAD = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: memory\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <memory@example.com>\r\n\r\n")
LINE = b"The quick brown fox jumps over the lazy dog,  again\tand again.  \r\n"
CASES = {
    "verify, relaxed body": ("verify", "relaxed", "crlf"),
    "verify, simple body": ("verify", "simple", "crlf"),
    "verify, bare LF line ends": ("verify", "relaxed", "lf"),
    "sign, relaxed body": ("sign", "relaxed", "crlf"),
    "sign, simple body": ("sign", "simple", "crlf"),
    "sign, bare LF line ends": ("sign", "relaxed", "lf"),
}


def _status(field: str) -> int:
    """A size from /proc/self/status in bytes (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def child(case: str, mib: int) -> dict:
    """Runs one case in this process and returns its figures."""
    from salmon_dkim.config import DomainKeys, Settings
    from salmon_dkim.core.dkim import dkim_sign
    from salmon_dkim.core.keys import KeyStore, load_private_key
    from salmon_dkim.core.signer import Signer
    from salmon_dkim.core.verifier import Verifier
    from salmon_dkim.dns.resolver import ZoneResolver

    action, body_canon, endings = CASES[case]
    folder = Path(tempfile.mkdtemp(prefix="memory-"))
    try:
        shutil.copyfile(KEYS / "example.com.ed25519.key", folder / "ed1.key")
        os.chmod(folder / "ed1.key", 0o600)
        key = load_private_key(folder / "ed1.key")
        message = HEAD + LINE * (mib * MIB // len(LINE))
        base = Settings()
        settings = dataclasses.replace(base, signing=dataclasses.replace(
            base.signing, body_canon=body_canon, max_message_size=0,
            domains=MappingProxyType({"example.com": DomainKeys("example.com", ("ed1",), (folder / "ed1.key",))})),
            verification=dataclasses.replace(base.verification, max_message_size=0))
        if action == "verify":
            message = dkim_sign(message, "example.com", "ed1", key, canon=("relaxed", body_canon)) + message
            verifier = Verifier(settings, ZoneResolver(KEYS / "keys.zone"))
            verifier.verify(HEAD)  # imports and caches warmed on a small message

            def run():
                report = verifier.verify(data)
                assert [r.result for r in report.results] == ["pass"], report.results
                return report
        else:
            signer = Signer(settings, KeyStore(recheck_seconds=1.0))
            signer.sign(HEAD + b"Hi\r\n", sender="alice@example.com")

            def run():
                result = signer.sign(data, sender="alice@example.com")
                assert result.signatures, result.unsigned_reason
                return result
        data = message.replace(b"\r\n", b"\n") if endings == "lf" else message
        del message
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        rss_before = _status("VmRSS")
        reset = _reset_peak_rss()
        result = run()
        peak = tracemalloc.get_traced_memory()[1] - before
        rss_peak = _status("VmHWM") - rss_before if reset else 0
        del result
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return {"size": len(data), "peak": peak, "rss_peak": rss_peak, "held": held, "rss_reset": reset}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=30, help="message size in MiB")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(child(args.case, args.mib)))
        return
    print(f"{'case':<28} {'size':>8} {'peak (Python)':>14} {'peak (RSS)':>11} {'held after':>11}  verdict")
    misses = 0
    for case in CASES:
        done = subprocess.run([sys.executable, __file__, "--mib", str(args.mib), "--case", case],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{case:<28} failed: {done.stderr.strip().splitlines()[-1:]}")
            misses += 1
            continue
        found = json.loads(done.stdout)
        size = found["size"]
        rss = f"{found['rss_peak'] / size:>10.2f}x" if found["rss_reset"] else f"{'n/a':>11}"
        ok = found["peak"] <= size + SLACK and found["held"] < MIB
        misses += not ok
        print(f"{case:<28} {size / MIB:>7.1f}M {found['peak'] / size:>13.2f}x {rss} "
              f"{found['held'] / 1024:>8.0f} KB  {'ok' if ok else 'MISS'}")
        sys.stdout.flush()
    print(f"\n{misses} case(s) miss the targets (extra peak at most 1x the message + {SLACK // MIB} MiB, "
          "under 1 MiB held after)")


if __name__ == "__main__":
    main()
