"""Run the example project in the foreground: ``make example``, or ``python run.py`` in this folder.

On first start it makes a DKIM key for each domain in config/salmon_dkim.ini
(keys/DOMAIN/SELECTOR.key, with ``generate_key`` as ``salmon-dkim keygen`` does) and
writes the zone file the project's DNS is answered from (dns.zone).  Then it
starts the smarthost sink and Salmon (config/boot.py), says where to send mail
and where to look, and runs until Ctrl-C or SIGTERM.

The key of news.example.com shows the key lifecycle: its record goes into
dns.zone only ``--publish-after`` seconds after start, as a DNS administrator
would publish it.  Until then the key is pending and news.example.com's mail is
signed with the shared key (example.com); the server then finds the record on
its own and the key signs, with no restart (``salmon-dkim keys`` shows it).

Options (or EXAMPLE_* environment variables) move the ports and the INI file;
the tests run the project on free ports this way.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from configobj import ConfigObj

HERE = Path(__file__).resolve().parent
LATE = "news.example.com"  # the domain whose record run.py publishes late, to show a pending key activate


def options(argv=None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Run the salmon-dkim example project.")
    parser.add_argument("--host", default=env("EXAMPLE_HOST", "127.0.0.1"), help="address to listen on")
    parser.add_argument("--mx-port", type=int, default=int(env("EXAMPLE_MX_PORT", 8823)),
                        help="SMTP port for mail to example.com and the lists (verified)")
    parser.add_argument("--submission-port", type=int, default=int(env("EXAMPLE_SUBMISSION_PORT", 8587)),
                        help="SMTP port for mail from example.com users (signed, relayed)")
    parser.add_argument("--sink-port", type=int, default=int(env("EXAMPLE_SINK_PORT", 8825)),
                        help="port of the smarthost sink")
    parser.add_argument("--config", default=env("EXAMPLE_DKIM_CONFIG", "config/salmon_dkim.ini"),
                        help="salmon-dkim INI file (relative to this folder)")
    parser.add_argument("--publish-after", type=float, default=float(env("EXAMPLE_PUBLISH_AFTER", 20)),
                        help=f"seconds before {LATE}'s key record goes into dns.zone (it is pending until then)")
    return parser.parse_args(argv)


def ensure_keys(ini: Path) -> None:
    """A key for every selector of every [Domains] entry that has none yet (RSA 2048, mode 0600)."""
    from salmon_dkim.config import load_settings  # noqa: PLC0415 (after chdir and sys.path)
    from salmon_dkim.core.keys import generate_key  # noqa: PLC0415
    signing = load_settings(ini, check_key_files=False).signing
    for entry in signing.domains.values():
        for selector, path in zip(entry.selectors, entry.key_files):
            if not path.exists():
                print(f"First start: making the {entry.domain} key {os.path.relpath(path, HERE)}")
                generate_key(signing.keys_dir, entry.domain, selector)


def ensure_user(ini: Path) -> None:
    """Alice's submission login in [Submission] CredentialsFile, as `salmon-dkim passwd` writes it."""
    from salmon_dkim.config import load_settings  # noqa: PLC0415
    from salmon_dkim.salmon.auth import hash_password, write_credentials  # noqa: PLC0415
    from send import SUBMISSION_LOGIN  # noqa: PLC0415
    path = load_settings(ini, check_key_files=False).submission.credentials_file
    if path is not None and not path.exists():
        print(f"First start: adding the submission user {SUBMISSION_LOGIN[0]} to {os.path.relpath(path, HERE)}")
        write_credentials(path, {SUBMISSION_LOGIN[0]: hash_password(SUBMISSION_LOGIN[1])})


# example.com asks receivers to reject mail that fails DMARC (its subdomain lists.example.com too), and
# says which hosts send its mail: the list rewrites From on posts by its users so they stay deliverable.
DMARC_AND_SPF = """\
_dmarc.example.com. IN TXT "v=DMARC1; p=reject; adkim=r; aspf=r"
example.com. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
lists.example.com. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
"""


def write_zone(ini: Path, late: bool = True) -> Path:
    """dns.zone: the public half of every key in [Domains], as the DNS of this example.

    With ``late``, LATE's records are left out while its key has never been active
    (``publish_late`` adds them).
    """
    from salmon_dkim.config import load_settings  # noqa: PLC0415
    from salmon_dkim.core.keys import load_private_key, zone_line  # noqa: PLC0415
    from salmon_dkim.core.lifecycle import KeyLifecycle  # noqa: PLC0415
    settings = load_settings(ini)
    active = {(st.domain, st.selector) for st in KeyLifecycle.from_settings(settings).statuses()
              if st.state == "active"}
    lines = ["; The DNS of the example project, written by run.py from keys/.\n"]
    for entry in settings.signing.domains.values():
        for selector, path in zip(entry.selectors, entry.key_files):
            if late and entry.domain == LATE and (LATE, selector) not in active:
                continue
            lines.append(zone_line(selector, entry.domain, load_private_key(path).dns_txt()) + "\n")
    lines.append(DMARC_AND_SPF)
    zone = settings.dns.zone_file
    # written aside and renamed: the server reads the zone at every key check, never half of it
    fd, temporary = tempfile.mkstemp(dir=zone.parent, prefix=".dns.zone.")
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write("".join(lines))
    os.chmod(temporary, 0o644)
    os.replace(temporary, zone)
    return zone


def publish_late(ini: Path, after: float, stop: threading.Event) -> threading.Thread:
    """In ``after`` seconds, LATE's records go into dns.zone, as its DNS administrator would publish them."""
    def publish() -> None:
        if not stop.wait(after):
            write_zone(ini, late=False)
            print(f"Published the DKIM record of {LATE} in dns.zone: the server finds it at its next check "
                  f"and its key signs (salmon-dkim keys --config config/salmon_dkim.ini)", flush=True)

    thread = threading.Thread(target=publish, name="publish late", daemon=True)
    thread.start()
    return thread


def zone_path(ini: Path) -> Path:
    """[DNS] ZoneFile, read before the settings can be loaded (they want the file to exist)."""
    return (ini.parent / ConfigObj(str(ini))["DNS"]["ZoneFile"]).resolve()


def banner(args, zone: Path) -> str:
    where = args.host
    # send.py and salmon-dkim need the interpreter salmon-dkim is installed in (../.venv with make example)
    python = os.path.relpath(sys.executable, HERE)
    command = os.path.relpath(Path(sys.executable).with_name("salmon-dkim"), HERE)
    return f"""
salmon-dkim example project is running (Ctrl-C stops it).

  Mail for example.com and the lists:   smtp://{where}:{args.mx_port}   (DKIM-verified)
  Mail from example.com users:          smtp://{where}:{args.submission_port}   (DKIM-signed, relayed)
  Smarthost (an SMTP sink):             smtp://127.0.0.1:{args.sink_port}

  In a second terminal, in {HERE}:
  {python} send.py inbox           a signed message to bob@example.com      -> maildir/new/
  {python} send.py subscribe ADDR  ADDR joins lunch@lists.example.com       -> welcome in sink/
  {python} send.py post            a signed post from alice@example.com     -> sink/ (one per member)
  {python} send.py submit          alice@example.com writes to the outside  -> sink/, signed
  {python} send.py news            the newsletter from {LATE}    -> sink/, signed by example.com
                                   until {LATE}'s key is published (in {args.publish_after:g} s), then by its own

  Look at: maildir/new/ (Authentication-Results on top), sink/ (signed, sealed),
           logs/dkim-activity.jsonl, logs/salmon.log; DNS is {zone.relative_to(HERE)}
  Check:   {command} verify --zone {zone.relative_to(HERE)} sink/FILE.eml
  Keys:    {command} keys --config {args.config}
"""


def serve(args) -> int:
    os.chdir(HERE)
    sys.path.insert(0, str(HERE))
    os.environ.update(EXAMPLE_HOST=args.host, EXAMPLE_MX_PORT=str(args.mx_port),
                      EXAMPLE_SUBMISSION_PORT=str(args.submission_port),
                      EXAMPLE_SINK_PORT=str(args.sink_port), EXAMPLE_DKIM_CONFIG=args.config)
    for folder in ("logs", "run"):
        (HERE / folder).mkdir(exist_ok=True)
    from salmon_dkim.config import ConfigError  # noqa: PLC0415

    ini = (HERE / args.config).resolve()
    try:
        zone = zone_path(ini)
        if not zone.exists():
            zone.write_text("", encoding="ascii")
        ensure_keys(ini)
        ensure_user(ini)
        write_zone(ini)
    except (ConfigError, KeyError, OSError) as exc:
        print(f"cannot prepare the example from {args.config}: {exc}", file=sys.stderr)
        return 2

    from salmon import utils  # noqa: PLC0415 (imports config.settings and config.boot from here)
    from sink import SMTPSink  # noqa: PLC0415

    try:
        sink = SMTPSink("127.0.0.1", args.sink_port, HERE / "sink").start()
        settings = utils.import_settings(True)
        settings.receiver.start()
    except OSError as exc:
        print(f"cannot listen: {exc}; is the example running already? Other ports: "
              "--mx-port, --submission-port, --sink-port", file=sys.stderr)
        return 1
    print(banner(args, zone), flush=True)

    stop = threading.Event()
    publish_late(ini, args.publish_after, stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):  # a timed wait lets the signal handlers run promptly
        pass
    print("stopping...", flush=True)
    settings.receiver.stop()  # running handlers finish, then the receivers' loop thread ends
    sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(serve(options()))
