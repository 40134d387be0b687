"""Private key files, the KeyStore, and DKIM key records (RFC 6376 section 3.6.1)."""
import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import pytest
from conftest import KEYS, private_copy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from salmon_dkim.dns.resolver import ZoneResolver
from salmon_dkim.core.keys import (KeyFileError, KeyRecordError, KeyStore, PrivateKey, key_name, load_private_key,
                              parse_key_record, zone_line)

ED1_P = "rn64IfN/AfUH6ABRKqES1lq2+m+GpNG+90Go+K9F4Hk="


def published(selector, domain="example.com") -> bytes:
    return ZoneResolver(KEYS / "keys.zone").txt(key_name(selector, domain))[0]


def rsa_p(key: PrivateKey, fmt=serialization.PublicFormat.SubjectPublicKeyInfo) -> str:
    der = key.key.public_key().public_bytes(serialization.Encoding.DER, fmt)
    return base64.b64encode(der).decode()


# --- private key files -------------------------------------------------------

def test_loads_rsa_pkcs8_key_with_its_size(keys_dir):
    key = load_private_key(keys_dir / "example.com/s1.key")
    assert (key.algorithm, key.bits) == ("rsa", 2048)
    assert isinstance(key.key, rsa.RSAPrivateKey)


def test_loads_ed25519_key(keys_dir):
    key = load_private_key(keys_dir / "example.com/ed1.key")
    assert (key.algorithm, key.bits) == ("ed25519", 256)
    assert isinstance(key.key, ed25519.Ed25519PrivateKey)


def test_loads_pkcs1_rsa_key_as_opendkim_genkey_writes_it(keys_dir, tmp_path):
    pkcs8 = load_private_key(keys_dir / "example.com/s1.key")
    pem = pkcs8.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    path = tmp_path / "opendkim.private"
    path.write_bytes(pem)
    path.chmod(0o600)
    assert load_private_key(path).public_b64() == pkcs8.public_b64()


def test_smallest_accepted_rsa_key_is_1024_bits(keys_dir):
    assert load_private_key(keys_dir / "example.com/weak1024.key").bits == 1024


def test_refuses_group_readable_key_saying_chmod_600(keys_dir):
    path = keys_dir / "example.com/s1.key"
    path.chmod(0o644)
    with pytest.raises(KeyFileError) as err:
        load_private_key(path)
    assert str(err.value) == f"{path} is readable by group or others (mode 0644); run chmod 600 on it"


def test_refuses_key_group_can_read_even_when_others_cannot(keys_dir):
    path = keys_dir / "example.com/ed1.key"
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"readable by group or others \(mode 0640\); run chmod 600"):
        load_private_key(path)


@pytest.mark.parametrize("folder, mode", [
    pytest.param("example.com", 0o757, id="DOMAIN-others"), pytest.param("example.com", 0o775, id="DOMAIN-group"),
    pytest.param(".", 0o777, id="KeysDir-others"), pytest.param(".", 0o770, id="KeysDir-group")])
def test_refuses_a_key_in_a_folder_others_can_write_as_opendkim_does(keys_dir, folder, mode):
    """The DOMAIN folder and KeysDir: whoever can write there can put their own key in place of ours."""
    (keys_dir / folder).chmod(mode)
    where = (keys_dir / folder).resolve()
    with pytest.raises(KeyFileError) as err:
        load_private_key(keys_dir / "example.com/s1.key")
    assert str(err.value) == (f"{where} is writable by group or others (mode {mode:04o}), so the key in it can be "
                              f"replaced; run chmod go-w {where}")


def test_a_sticky_keys_folder_is_fine_as_others_cannot_replace_what_is_in_it(keys_dir):
    (keys_dir).chmod(0o1777)  # as /tmp: others may add names, not rename or remove ours
    assert load_private_key(keys_dir / "example.com/s1.key").bits == 2048


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user takes root")
@pytest.mark.parametrize("where, what", [("example.com", "the key in it"), (".", "the key in it"),
                                         ("example.com/s1.key", "it")])
def test_refuses_a_key_or_its_folders_owned_by_another_user(keys_dir, where, what):
    os.chown(keys_dir / where, NOBODY, NOBODY)
    with pytest.raises(KeyFileError, match=rf"{(keys_dir / where).resolve()} belongs to uid {NOBODY}, not to this "
                                           rf"user \(uid 0\) or root, so its owner can replace {what}"):
        load_private_key(keys_dir / "example.com/s1.key")


def test_a_symlinked_key_is_refused_when_its_targets_folder_is_open_to_others(keys_dir, tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o777)
    (tmp_path / "elsewhere").chmod(0o777)
    (keys_dir / "example.com/s1.key").rename(tmp_path / "elsewhere/s1.key")
    (keys_dir / "example.com/s1.key").symlink_to(tmp_path / "elsewhere/s1.key")
    with pytest.raises(KeyFileError, match="elsewhere is writable by group or others"):
        load_private_key(keys_dir / "example.com/s1.key")


def test_keystore_notices_a_keys_folder_opened_to_others_while_running(keys_dir):
    store = KeyStore()
    path = keys_dir / "example.com/s1.key"
    store.get(path)
    (keys_dir / "example.com").chmod(0o777)
    with pytest.raises(KeyFileError, match="writable by group or others"):
        store.get(path)


def test_start_up_stops_naming_a_keys_folder_others_can_write(keys_dir, tmp_path):
    from salmon_dkim.config import ConfigError
    from salmon_dkim.salmon.context import DKIM
    ini = tmp_path / "salmon_dkim.ini"
    ini.write_text(f"[Signing]\nKeysDir = {keys_dir}\n[Domains]\n[[example.com]]\nSelectors = s1\n"
                   f"[DNS]\nZoneFile = {KEYS / 'keys.zone'}\n[Logging]\nActivityLog =\n")
    (keys_dir / "example.com").chmod(0o777)
    with pytest.raises(ConfigError, match=rf"unusable signing keys: example.com: {keys_dir}/example.com is "
                                          r"writable by group or others \(mode 0777\)"):
        DKIM.from_config(ini)


NOBODY = 65534


def _python_for(uid: int) -> Optional[List[str]]:
    """A Python that uid can run, with this checkout and its libraries on its path (the venv's may be unreachable)."""
    import cryptography
    path = os.pathsep.join([str(Path(__file__).parent.parent), str(Path(cryptography.__file__).parent.parent)])
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin"}
    for exe in dict.fromkeys([sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"]):
        try:
            probe = subprocess.run([exe, "-c", "import salmon_dkim.core.keys"], user=uid, env=env, cwd="/",
                                   capture_output=True)
        except OSError:  # this one is in a folder uid cannot enter
            continue
        if probe.returncode == 0:
            return [exe, env]
    return None


def load_as(uid: int, path: Path) -> str:
    """What load_private_key says to uid: "ok ALGORITHM" or "error MESSAGE"."""
    found = _python_for(uid)
    if found is None:
        pytest.skip(f"no Python here that uid {uid} can run with cryptography")
    exe, env = found
    code = ("import sys\nfrom salmon_dkim.core.keys import KeyFileError, load_private_key\n"
            "try:\n    print('ok', load_private_key(sys.argv[1]).algorithm)\n"
            "except KeyFileError as exc:\n    print('error', exc)\n")
    done = subprocess.run([exe, "-c", code, str(path)], user=uid, env=env, cwd="/", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def shared_dir():
    """A folder outside pytest's private temp folder, so another user can reach what is in it."""
    with tempfile.TemporaryDirectory(prefix="keys-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user takes root")
def test_a_keys_folder_the_server_cannot_enter_is_one_line_naming_it(shared_dir):
    key = private_copy(KEYS / "example.com.ed25519.key", shared_dir / "keys/example.com/ed1.key")
    os.chown(key, NOBODY, NOBODY)
    (shared_dir / "keys/example.com").chmod(0o700)  # root's, closed to the server's user
    said = load_as(NOBODY, key)
    assert said == (f"error {shared_dir}/keys/example.com cannot be entered by this user (uid {NOBODY}), so {key} "
                    f"cannot be read; give it access, e.g. chown {NOBODY} {shared_dir}/keys/example.com")


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user takes root")
def test_root_owned_keys_folders_are_fine_for_the_server_user(shared_dir):
    key = private_copy(KEYS / "example.com.ed25519.key", shared_dir / "keys/example.com/ed1.key")
    os.chown(key, NOBODY, NOBODY)
    assert load_as(NOBODY, key) == "ok ed25519"
    os.chown(shared_dir / "keys", 1, 1)  # a third user's KeysDir: it could swap the folder below
    assert load_as(NOBODY, key).startswith(f"error {shared_dir}/keys belongs to uid 1, not to this user")


def test_refuses_encrypted_key(tmp_path):
    path = private_copy(KEYS / "encrypted.key", tmp_path / "encrypted.key")
    with pytest.raises(KeyFileError, match=r"encrypted.key is an encrypted private key; .*passphrase"):
        load_private_key(path)


def test_refuses_corrupt_key(tmp_path):
    path = private_copy(KEYS / "corrupt.key", tmp_path / "corrupt.key")
    with pytest.raises(KeyFileError, match=r"corrupt.key is not a readable private key .*keygen"):
        load_private_key(path)


def test_refuses_512_bit_rsa_key(tmp_path):
    path = private_copy(KEYS / "example.com.rsa512.key", tmp_path / "weak512.key")
    with pytest.raises(KeyFileError, match=r"weak512.key holds a 512-bit RSA key, under the 1024-bit minimum"):
        load_private_key(path)


def test_min_bits_is_a_choice_of_the_caller(keys_dir):
    with pytest.raises(KeyFileError, match="1024-bit RSA key, under the 2048-bit minimum"):
        load_private_key(keys_dir / "example.com/weak1024.key", min_bits=2048)


def test_refuses_key_type_dkim_does_not_use(tmp_path):
    path = tmp_path / "ec.key"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"ec.key holds a key of type EC; DKIM keys are RSA or Ed25519"):
        load_private_key(path)


def test_missing_key_file_is_named(tmp_path):
    with pytest.raises(KeyFileError, match=r"nothere.key cannot be read"):
        load_private_key(tmp_path / "nothere.key")


def test_error_messages_and_repr_hold_no_key_material(keys_dir, tmp_path):
    key = load_private_key(keys_dir / "example.com/s1.key")
    secret_lines = (KEYS / "example.com.rsa2048.key").read_text().splitlines()[1:-1]
    assert repr(key) == f"PrivateKey(algorithm='rsa', bits=2048, path='{keys_dir / 'example.com/s1.key'}')"
    corrupt = private_copy(KEYS / "corrupt.key", tmp_path / "c.key")
    with pytest.raises(KeyFileError) as err:
        load_private_key(corrupt)
    for line in secret_lines[:1] + (KEYS / "corrupt.key").read_text().splitlines()[1:2]:
        assert line not in repr(key) and line not in str(err.value)


def test_public_halves_match_the_published_test_records(keys_dir):
    for selector, name in [("s1", "s1.key"), ("ed1", "ed1.key"), ("big", "big.key")]:
        key = load_private_key(keys_dir / "example.com" / name)
        assert parse_key_record(published(selector)).public_b64 == key.public_b64()


def test_dns_txt_is_the_record_to_publish(keys_dir):
    key = load_private_key(keys_dir / "example.com/ed1.key")
    assert key.dns_txt() == f"v=DKIM1; k=ed25519; p={ED1_P}"
    assert key.dns_txt(testing=True) == f"v=DKIM1; k=ed25519; t=y; p={ED1_P}"
    assert parse_key_record(key.dns_txt(testing=True).encode()).testing


# --- KeyStore -----------------------------------------------------------------

def test_keystore_reads_each_key_once(keys_dir):
    store = KeyStore()
    first = store.get(keys_dir / "example.com/s1.key")
    assert store.get(str(keys_dir / "example.com/../example.com/s1.key")) is first


def test_keystore_reads_a_rotated_file_again(keys_dir):
    store = KeyStore()
    path = keys_dir / "example.com/s1.key"
    before = store.get(path)
    path.write_bytes((KEYS / "example.org.rsa2048.key").read_bytes())
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse-clock filesystems
    after = store.get(path)
    assert after is not before and after.public_b64() != before.public_b64()


def test_keystore_notices_a_key_made_group_readable(keys_dir):
    store = KeyStore()
    path = keys_dir / "example.com/s1.key"
    store.get(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="run chmod 600"):
        store.get(path)


def test_keystore_refuses_what_load_private_key_refuses(tmp_path):
    path = private_copy(KEYS / "example.com.rsa512.key", tmp_path / "k.key")
    with pytest.raises(KeyFileError, match="512-bit"):
        KeyStore().get(path)


# --- key records --------------------------------------------------------------

def test_record_with_every_tag():
    record = parse_key_record(b"v=DKIM1; h=sha256:sha1; k=ed25519; n=hello; s=email; t=y:s; p=" + ED1_P.encode())
    assert record.version == "DKIM1" and record.key_type == "ed25519"
    assert record.hashes == ("sha256", "sha1") and record.services == ("email",)
    assert record.flags == ("y", "s") and record.testing and record.strict
    assert record.notes == "hello" and record.bits() == 256
    assert isinstance(record.public_key(), ed25519.Ed25519PublicKey)


def test_record_defaults():
    record = parse_key_record(published("s1").replace(b"v=DKIM1; k=rsa; ", b""))
    assert (record.version, record.key_type, record.hashes, record.services, record.flags) == \
        (None, "rsa", None, ("*",), ())
    assert not record.testing and not record.revoked and record.bits() == 2048


def test_record_ignores_unknown_tags_and_folding_whitespace():
    p = ED1_P[:20] + " \r\n\t" + ED1_P[20:]
    record = parse_key_record(f"v=DKIM1; k=ed25519; x_future=1; p={p}".encode())
    assert record.public_b64 == ED1_P


def test_empty_p_means_revoked():
    record = parse_key_record(b"v=DKIM1; k=rsa; p=")
    assert record.revoked and record.bits() == 0
    with pytest.raises(KeyRecordError, match="revoked") as err:
        record.public_key()
    assert err.value.tag == "p"


def test_record_accepts_bare_pkcs1_rsa_key(keys_dir):
    key = load_private_key(keys_dir / "example.com/s1.key")
    record = parse_key_record(f"k=rsa; p={rsa_p(key, serialization.PublicFormat.PKCS1)}".encode())
    assert record.matches(key) and record.bits() == 2048


def test_record_matches_only_its_own_private_key(keys_dir):
    s1 = parse_key_record(published("s1"))
    assert s1.matches(load_private_key(keys_dir / "example.com/s1.key"))
    assert not s1.matches(load_private_key(keys_dir / "example.org/s2048.key"))
    assert not s1.matches(load_private_key(keys_dir / "example.com/ed1.key"))


def test_record_bits_of_a_weak_published_key():
    assert parse_key_record(published("weak512")).bits() == 512


@pytest.mark.parametrize("txt, tag, words", [
    (b"v=DKIM2; p=" + ED1_P.encode(), "v", "v= must be DKIM1"),
    (b"k=ed25519; v=DKIM1; p=" + ED1_P.encode(), "v", "first tag"),
    (b"v=DKIM1; k=dsa; p=" + ED1_P.encode(), "k", "k=dsa is not a known key type"),
    (b"v=DKIM1; k=rsa", "p", "p= is missing"),
    (b"v=DKIM1; k=ed25519; p=not*base64!", "p", "p= is not valid base64"),
    (b"v=DKIM1; k=ed25519; p=AAAA", "p", "raw 32-byte key"),
    (b"v=DKIM1; k=rsa; p=" + ED1_P.encode(), "p", "does not decode to an RSA public key"),
    (b"v=DKIM1; h=sha256::sha1; p=", "h", "h= is not a colon-separated list"),
    (b"v=DKIM1; s=em ail; p=", "s", "s= is not a colon-separated list"),
    (b"v=DKIM1; t=; p=", "t", "t= is not a colon-separated list"),
    (b"v=DKIM1; n=caf\xc3\xa9; p=", "n", "n= holds non-ASCII bytes"),
    (b"v=DKIM1; p=; p=", None, "duplicate tag p="),
    (b"hello world", None, "not a valid tag list"),
])
def test_malformed_record_names_the_tag(txt, tag, words):
    with pytest.raises(KeyRecordError, match=words) as err:
        parse_key_record(txt)
    assert err.value.tag == tag


def test_ed25519_key_in_spki_form_is_refused():
    spki = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(ED1_P)).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyRecordError, match=r"\(RFC 8463\), not 44 bytes") as err:
        parse_key_record(b"k=ed25519; p=" + base64.b64encode(spki))
    assert err.value.tag == "p"


def test_rsa_record_holding_an_ed25519_spki_key_is_refused():
    spki = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(ED1_P)).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyRecordError, match="not RSA, but k= says rsa"):
        parse_key_record(b"k=rsa; p=" + base64.b64encode(spki))


# --- names and zone lines -----------------------------------------------------

def test_key_name():
    assert key_name("s1", "example.com") == "s1._domainkey.example.com"
    assert key_name("s1", "example.com.") == "s1._domainkey.example.com"


def test_zone_line_splits_at_255_and_reads_back(keys_dir, tmp_path):
    txt = load_private_key(keys_dir / "example.com/big.key").dns_txt()
    line = zone_line("big", "example.com", txt)
    strings = line.split('"')[1::2]
    assert len(txt) > 510 and [len(s) for s in strings[:-1]] == [255] * (len(strings) - 1)
    assert line.startswith("big._domainkey.example.com. IN TXT ( \"") and line.endswith("\" )")
    zone = tmp_path / "z.zone"
    zone.write_text(line + "\n")
    assert ZoneResolver(zone).txt("big._domainkey.example.com") == [txt.encode()]


def test_keystore_serves_a_key_without_looking_at_the_file_within_recheck_seconds(keys_dir):
    now = [0.0]
    store = KeyStore(recheck_seconds=1.0, clock=lambda: now[0])
    path = keys_dir / "example.com/s1.key"
    first = store.get(path)
    path.chmod(0o644)
    assert store.get(path) is first  # within the second: the file is not looked at
    now[0] = 1.0
    with pytest.raises(KeyFileError, match="run chmod 600"):
        store.get(path)
