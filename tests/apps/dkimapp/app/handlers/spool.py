"""Writes what a handler saw where the tests read it: spool/LOCAL.eml, LOCAL.str.eml, LOCAL.json."""
import dataclasses
import json
import os

from config import settings


def record(local, message):
    base = os.path.join(settings.spool, local)
    with open(base + ".eml", "wb") as f:
        f.write(message.Data)
    with open(base + ".str.eml", "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(str(message))
    report = getattr(message, "dkim", None)
    outcome = getattr(message, "dkim_outcome", None)
    session = getattr(message, "session", None)
    seen = {
        "session": dataclasses.asdict(session) if session else None,
        "dkim": [r.as_json() for r in report.results] if report else None,
        "outcome": dataclasses.asdict(outcome) if outcome else None,
        "from": message.From, "to": message.To,
    }
    with open(base + ".json", "w") as f:
        json.dump(seen, f)
