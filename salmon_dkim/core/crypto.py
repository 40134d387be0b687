"""Signing and checking signatures with OpenSSL (through ``cryptography``): the one algorithm table.

DKIM (RFC 6376, RFC 8463), ARC (RFC 8617) and DomainKeys (RFC 4870) all sign
the same way: RSA PKCS#1 v1.5 over the data with SHA-256 (or SHA-1), or
Ed25519 over the SHA-256 digest of the data.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

ALGORITHMS: Dict[str, Tuple[str, str]] = {
    "rsa-sha256": ("rsa", "sha256"), "rsa-sha1": ("rsa", "sha1"), "ed25519-sha256": ("ed25519", "sha256")}
"""a= value -> (key type, hash)."""

SIGNING_ALGORITHM = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
"""What we sign with, by key type."""

_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


class BadSignature(Exception):
    """The signature does not verify; str() says how (wrong length, or a mismatch)."""


def sign(key, algorithm: str, data: bytes, *, prehashed: bool = False) -> bytes:
    """The signature of ``data`` by a ``cryptography`` private key, for an a= value of :data:`ALGORITHMS`.

    ``prehashed``: ``data`` is already the digest (hashed as it streamed by, as DomainKeys does).
    """
    key_type, hash_name = ALGORITHMS[algorithm]
    digest = data if prehashed else hashlib.new(hash_name, data).digest()
    if key_type == "ed25519":
        return key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 digest of the data
    return key.sign(digest, padding.PKCS1v15(), utils.Prehashed(_HASHES[hash_name]()))


def verify(public_key, algorithm: str, signature: bytes, data: bytes, *, prehashed: bool = False) -> None:
    """Nothing when ``signature`` is ``public_key``'s signature of ``data``; else BadSignature.

    ``prehashed``: ``data`` is already the digest (hashed as it streamed by).  A signature
    whose length is not the key's (RSA: the modulus size, Ed25519: 64 bytes) fails before
    any arithmetic.  The caller checks the key type fits the algorithm.
    """
    key_type, hash_name = ALGORITHMS[algorithm]
    digest = data if prehashed else hashlib.new(hash_name, data).digest()
    try:
        if key_type == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
            size = (public_key.key_size + 7) // 8
            if len(signature) != size:
                raise BadSignature(f"b= is {len(signature)} bytes; a signature by this "
                                   f"{public_key.key_size}-bit key is {size}")
            public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(_HASHES[hash_name]()))
        elif key_type == "ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
            if len(signature) != 64:
                raise BadSignature(f"b= is {len(signature)} bytes; an Ed25519 signature is 64")
            public_key.verify(signature, digest)
        else:
            raise BadSignature(f"the key cannot check a={algorithm}")
    except InvalidSignature:
        raise BadSignature("signature mismatch") from None
