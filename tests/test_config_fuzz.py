"""Configuration never crashes: hostile values for every option of the spec, and hostile file shapes.

The options come from ``salmon_dkim.spec`` itself, so a new option is covered the day it is added.
Each generated file must either load into Settings that work (a DKIM context builds from them, a
message is signed and verified, our headers are written) or stop with one ConfigError line that
names the file.
"""
import math
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
from configobj import ConfigObj

from salmon_dkim.config import SPEC_PATH, ConfigError, Settings, load_settings
from salmon_dkim.core import authres
from salmon_dkim.core.message import FIELD_NAME, Message, prepend
from salmon_dkim.core.signer import SigningError
from salmon_dkim.dns.resolver import ZoneResolver, resolver_from_settings
from salmon_dkim.salmon.context import DKIM

from conftest import KEYS, private_copy

SPEC = ConfigObj(str(SPEC_PATH), list_values=False, _inspec=True)
MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hello\r\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello.\r\n")

# Written as the value of every option, whatever its type; {name} stands for a path made below.
HOSTILE = ["", "nan", "inf", "-inf", "1e309", "-1", "0", "99999999999999999999999999999", "a,b", "Yes,No",
           "ünïcödé", "..", "{directory}", "{loop}", "{garbage}", "\x01", "a\x00b", "\u2028", "\"a\" \"b\"",
           "x" * 300]
# More per type: the values that one type's parser is most likely to take in.
HOSTILE_BY_TYPE = {
    "boolean": ["maybe", "2", "Oui"],
    "integer": ["1e3", "1.0", "0x10", "9" * 5000, "18446744073709551616", "٣"],
    "float": ["NaN", "+nan", "-1e309", "infinity", "3,5", "1e-400"],
    "string": ["{missing}", "{zone}", "{key}", "a b", "a:b", "a;b=c", "a@b", "(", "\x7f",
               "\u200b", "例え.テスト", "*"],
    "force_list": ["{missing}", "a,,b", "a b", "a:b", "from:", "a@b", "\x7f", "\u200b", "例え.テスト", "*",
                   "from, from", "{directory}, {loop}"],
    "option": ["relaxed", "RELAXED/RELAXED", "debug", "simple/simple,"],
}
SAMPLE_NAMES = {"Domains": "example.com", "SenderSelectors": "alice@example.com"}


def spec_options() -> Iterator[Tuple[Tuple[str, ...], str, str]]:
    """(section path, option, type) of every option in the spec; a __many__ section gets a sample name."""
    def walk(section, path):
        for name, value in section.items():
            if isinstance(value, dict):
                here = SAMPLE_NAMES.get(path[-1], name) if name == "__many__" else name
                yield from walk(value, path + (here,))
            else:
                option = SAMPLE_NAMES.get(path[-1], name) if name == "__many__" else name
                yield path, option, value.partition("(")[0]
    yield from walk(SPEC, ())


def base_file() -> Dict[Tuple[str, ...], Dict[str, str]]:
    """A working file: one signing domain with a real key, DNS from the test keys' zone file."""
    return {
        ("Signing",): {"KeysDir": "keys"},
        ("Domains",): {},
        ("Domains", "example.com"): {"Selectors": "ed1"},
        ("DNS",): {"ZoneFile": "keys.zone"},
        ("Logging",): {"ActivityLog": "activity.jsonl"},
    }


def render(sections: Dict[Tuple[str, ...], Dict[str, str]], top: Dict[str, str] = None) -> str:
    lines = [f"{k} = {v}" for k, v in (top or {}).items()]
    for path, options in sections.items():
        lines.append("[" * len(path) + path[-1] + "]" * len(path))
        lines += [f"{k} = {v}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def paths(tmp: Path) -> Dict[str, str]:
    """The hostile paths: a folder, a symlink loop, a zone file of garbage, a missing file; and ours."""
    (tmp / "folder").mkdir(exist_ok=True)
    if not (tmp / "loop").is_symlink():
        os.symlink("loop", tmp / "loop")
    (tmp / "garbage.zone").write_bytes(b"this is not a zone file\n\x00\xff @@ IN TXT ( \"\n")
    return {"directory": str(tmp / "folder"), "loop": str(tmp / "loop"), "garbage": str(tmp / "garbage.zone"),
            "missing": str(tmp / "absent" / "file"), "zone": "keys.zone",
            "key": str(tmp / "keys" / "example.com" / "ed1.key")}


def one_value_files(tmp: Path) -> Iterator[Tuple[str, str]]:
    """(label, text): the working file with one option set to one hostile value, for every option.

    Every path is inside ``tmp``: an option naming a file we write (ActivityLog, CacheFile) is written to.
    """
    names = paths(tmp)
    for path, option, kind in spec_options():
        for value in HOSTILE + HOSTILE_BY_TYPE.get(kind, []):
            value = value.format(**names) if "{" in value and "}" in value else value
            sections = base_file()
            sections.setdefault(path, {})[option] = value
            yield f"{'/'.join(path)} {option} = {value[:40]!r}", render(_ordered(sections))


def _ordered(sections):
    """Sections in the order configobj needs: a subsection right after its parent."""
    return dict(sorted(sections.items(), key=lambda item: item[0]))


def shape_files(tmp: Path) -> Iterator[Tuple[str, str]]:
    """(label, text): hostile shapes of the file itself."""
    base = base_file()
    for path, option, kind in spec_options():
        value = SPEC_DEFAULTS.get((path, option), "x")
        yield f"{option} at the top level", render(_ordered(base), top={option: value})
        twice = base_file()
        twice.setdefault(path, {})[option] = value
        text = render(_ordered(twice)).replace(f"{option} = {value}\n", f"{option} = {value}\n" * 2, 1)
        yield f"{'/'.join(path)} {option} repeated", text
    for section in SPEC:
        yield f"[[{section}]] nested", render(_ordered(base)) + f"[[{section}]]\nx = 1\n"
        yield f"[{section}] twice", render(_ordered(base)) + f"[{section}]\n"
        yield f"[{section}] as a value", render(_ordered(base), top={section: "1"})
    yield "subsection at the top", render(_ordered(base)) + "[example.org]\nSelectors = s1\n"
    yield "domain without section", render({k: v for k, v in base.items() if k != ("Domains",)})
    yield "empty file", ""
    yield "only a comment", "# nothing\n"
    yield "garbage", "\x00\x01\x02 = = =\n[[[\n"
    yield "unclosed quote", '[Signing]\nKeysDir = "keys\n'
    yield "triple quote", '[Signing]\nKeysDir = """keys\n'
    yield "BOM", "\ufeff" + render(_ordered(base))
    yield "CR line ends", render(_ordered(base)).replace("\n", "\r")
    yield "domain named ..", render(_ordered(base)).replace("[[example.com]]", "[[..]]")
    yield "domain named empty", render(_ordered(base)).replace("[[example.com]]", "[[\"\"]]")
    yield "domain non-ASCII", render(_ordered(base)).replace("[[example.com]]", "[[bücher.example]]")


# A value of the right type, for the shapes where the value is not what is wrong.
SPEC_DEFAULTS = {(path, option): {"boolean": "Yes", "integer": "1", "float": "1.0"}.get(kind, "s1")
                 for path, option, kind in spec_options()}


def numbers_in(value) -> Iterator[float]:
    """Every int and float inside a Settings, however deep."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif is_dataclass(value):
        for f in fields(value):
            yield from numbers_in(getattr(value, f.name))
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from numbers_in(item)
    elif hasattr(value, "values"):
        for item in value.values():
            yield from numbers_in(item)


def works(settings: Settings, resolver) -> None:
    """What a loaded configuration must do: build, sign, verify, and write our headers."""
    assert all(math.isfinite(n) for n in numbers_in(settings)), "a number in the settings is nan or inf"
    assert 0 < settings.dns.timeout < 3600
    if settings.dns.zone_file is not None:
        resolver_from_settings(settings.dns)
    try:
        dkim = DKIM.from_settings(settings, resolver=resolver)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    try:
        try:
            signed = dkim.signer.sign(MESSAGE, sender="alice@example.com").message
        except SigningError:
            signed = MESSAGE
        report = dkim.verifier.verify(signed)
        options = settings.verification
        header = authres.header_for(options.authserv_id, report)
        if options.score_header:
            assert FIELD_NAME.fullmatch(options.score_header.encode("ascii"))
            header += f"{options.score_header}: 1\r\n".encode("ascii")
        ours = prepend(authres.remove_ours(signed, options.authserv_id, [options.score_header]), header)
        assert authres.parse(Message(ours).values(b"authentication-results")[0].decode())[0] == \
            options.authserv_id
        for name in settings.signing.headers + settings.signing.oversign_headers:
            assert FIELD_NAME.fullmatch(name.encode("ascii"))
    finally:
        dkim.activity.close()


def check(tmp: Path, label: str, text: str, resolver) -> str:
    """"" when the file behaves; otherwise what went wrong."""
    path = tmp / "salmon_dkim.ini"
    path.write_text(text, encoding="utf-8", newline="")
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        message = str(exc)
        if "\n" in message or "\r" in message or not message.startswith(str(path)):
            return f"{label}: not one line naming the file: {message!r}"
        return ""
    except Exception as exc:  # noqa: BLE001 (the point of the test)
        return f"{label}: load_settings raised {type(exc).__name__}: {exc}"
    try:
        works(settings, resolver)
    except Exception as exc:  # noqa: BLE001
        return f"{label}: loaded, then {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        restore(tmp)  # a hostile ActivityLog or CacheFile may have written over the key or the zone
    return ""


def restore(tmp: Path) -> None:
    """The key (Ed25519: read in microseconds, where RSA takes 50 ms) and the zone, as they were."""
    for src, dest in ((KEYS / "example.com.ed25519.key", tmp / "keys" / "example.com" / "ed1.key"),
                      (KEYS / "keys.zone", tmp / "keys.zone")):
        if not dest.is_file() or dest.stat().st_size != src.stat().st_size:
            private_copy(src, dest)


@pytest.fixture
def workdir(tmp_path) -> Path:
    restore(tmp_path)
    return tmp_path


def test_the_base_file_signs_and_verifies(workdir):
    path = workdir / "salmon_dkim.ini"
    path.write_text(render(_ordered(base_file())))
    dkim = DKIM.from_settings(load_settings(path), resolver=ZoneResolver(workdir / "keys.zone"))
    signed = dkim.signer.sign(MESSAGE, sender="alice@example.com")
    assert [r.result for r in dkim.verifier.verify(signed.message).results] == ["pass"]
    dkim.activity.close()


def test_every_hostile_value_of_every_option_loads_into_working_settings_or_is_one_line(workdir):
    resolver = ZoneResolver(workdir / "keys.zone")
    files = list(one_value_files(workdir))
    failures = [f for f in (check(workdir, label, text, resolver) for label, text in files) if f]
    assert not failures, f"{len(failures)} of {len(files)} files:\n" + "\n".join(failures)


def test_every_hostile_shape_of_the_file_loads_into_working_settings_or_is_one_line(workdir):
    resolver = ZoneResolver(workdir / "keys.zone")
    files = list(shape_files(workdir))
    failures = [f for f in (check(workdir, label, text, resolver) for label, text in files) if f]
    assert not failures, f"{len(failures)} of {len(files)} files:\n" + "\n".join(failures)
