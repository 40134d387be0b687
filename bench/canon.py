"""Body canonicalization and hashing of 1 MB of ordinary prose, next to hashlib.sha256 of the same bytes.

The text is varied (words drawn from a list, lines of different lengths), with occasional double
spaces, leading tabs and trailing spaces, not one repeated line.  Printed per method: the time of
``salmon_dkim.core.canon.body_hash`` (canonicalize and hash, streaming) and its ratio to a plain
SHA-256 of the same bytes, measured in the same run.  Target (issue 10): relaxed at most 5x.

    .venv/bin/python bench/canon.py
"""
from __future__ import annotations

import hashlib
import random
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salmon_dkim.core.canon import body_hash  # noqa: E402

WORDS = ("the of and to in is was for on that with as by at from this be are have or an it which not "
         "mail server signature header body canonical message list domain key record receiver sender "
         "policy alignment relaxed simple folding whitespace trailing").split()


def prose(size: int = 1 << 20, seed: int = 6376) -> bytes:
    rng = random.Random(seed)
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 16)))
        roll = rng.random()
        if roll < 0.03:
            line = line.replace(" ", "  ", 1)  # a double space after a full stop
        elif roll < 0.05:
            line = "\t" + line
        elif roll < 0.07:
            line += "  "
        elif roll < 0.12:
            line = ""  # paragraph breaks
        lines.append(line)
        total += len(line) + 2
    return ("\r\n".join(lines) + "\r\n").encode()


def best(function, number: int = 20, repeat: int = 7) -> float:
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number


def main() -> None:
    body = prose()
    mib = len(body) / (1 << 20)
    print(f"{len(body):,} bytes of prose; best of 7 rounds\n")
    print(f"{'':<28} {'ms per MiB':>10}  ratio")
    sha = best(lambda: hashlib.sha256(body).digest()) / mib
    print(f"{'hashlib.sha256':<28} {sha * 1e3:>10.2f}  1.00x")
    ratios = {}
    for method in ("simple", "relaxed"):
        spent = best(lambda: body_hash(body, method)) / mib
        ratios[method] = spent / sha
        print(f"{'body_hash ' + method:<28} {spent * 1e3:>10.2f}  {spent / sha:.2f}x")
    print(f"\ntarget: relaxed canonicalization and hashing within 5x sha256: {ratios['relaxed']:.2f}x "
          f"{'met' if ratios['relaxed'] <= 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
