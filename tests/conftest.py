"""Fixtures shared by every test module.

Helpers for real peers live in their own modules beside this one
(dnsserver.py, peers.py, salmonserver.py) and are imported by the tests that use them.
"""
import os
import shutil
from pathlib import Path

import pytest

# Fixtures of the real servers the tests talk to: dnsmasq (dns_server, keys_dns_server,
# black_hole) and a running Salmon app (dkim_app).
pytest_plugins = ["dnsserver", "salmonserver"]

DATA = Path(__file__).with_name("data")
KEYS = DATA / "keys"
MESSAGES = DATA / "messages"


def private_copy(src: Path, dest: Path) -> Path:
    """A key copied from tests/data with the mode a real key has (git keeps no modes)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o600)
    return dest


@pytest.fixture
def keys_dir(tmp_path) -> Path:
    """A KeysDir laid out as keygen writes it: DOMAIN/SELECTOR.key, mode 0600."""
    layout = {
        "example.com/s1.key": "example.com.rsa2048.key",
        "example.com/ed1.key": "example.com.ed25519.key",
        "example.com/weak1024.key": "example.com.rsa1024.key",
        "example.com/big.key": "example.com.rsa4096.key",
        "example.org/s2048.key": "example.org.rsa2048.key",
    }
    root = tmp_path / "keys"
    for dest, src in layout.items():
        private_copy(KEYS / src, root / dest)
    return root


@pytest.fixture
def zone_file() -> Path:
    """The public keys of every test key, as a zone file."""
    return KEYS / "keys.zone"


def message(name: str) -> bytes:
    return (MESSAGES / name).read_bytes()
