"""The smarthost of the default configuration: an SMTP sink on 127.0.0.1 that keeps what it gets.

Each message is written to ``sink/NNNN-RECIPIENT.eml``, one file per
recipient, with the exact bytes that arrived (dot-stuffing undone): the
signed result, to read or to check with ``salmon-dkim verify``.  Nothing
leaves the machine.  A thread of its own, not Salmon's asyncore loop: Salmon
relays from inside that loop and would wait on itself.
"""
from __future__ import annotations

import itertools
import os
import socketserver
import threading
from pathlib import Path
from typing import List


class _SMTPSession(socketserver.StreamRequestHandler):
    """Just enough RFC 5321 for smtplib."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode("ascii") + b"\r\n")

    def handle(self) -> None:
        self.reply("220 smarthost.example ESMTP sink (stores, never delivers)")
        sender, recipients = "", []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply("250-smarthost.example")
                self.reply("250 8BITMIME")
            elif verb == b"MAIL":
                sender, recipients = _address(line), []
                self.reply("250 2.1.0 OK")
            elif verb == b"RCPT":
                recipients.append(_address(line))
                self.reply("250 2.1.5 OK")
            elif verb == b"DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                names = self.server.sink.store(recipients, self._data())
                self.reply(f"250 2.0.0 stored as {', '.join(names)}")
            elif verb in (b"RSET", b"NOOP"):
                self.reply("250 2.0.0 OK")
            elif verb == b"QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.1 Not implemented here")

    def _data(self) -> bytes:
        lines = []
        while True:
            line = self.rfile.readline()
            if line in (b".\r\n", b".\n", b""):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)


def _address(line: bytes) -> str:
    return line.split(b":", 1)[1].split(b">", 1)[0].strip(b" <\r\n").decode("utf-8", "replace")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SMTPSink:
    """An SMTP server on ``host:port`` storing each message in ``folder``."""

    def __init__(self, host: str, port: int, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = _Server((host, port), _SMTPSession)
        self.server.sink = self
        self.host, self.port = self.server.server_address[:2]
        self._numbers = itertools.count(len(list(self.folder.glob("*.eml"))) + 1)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="smtp-sink", daemon=True)

    def store(self, recipients: List[str], data: bytes) -> List[str]:
        names = []
        for recipient in recipients:
            with self._lock:
                name = f"{next(self._numbers):04d}-{recipient.replace('/', '_')}.eml"
            partial = self.folder / f".{name}.part"
            partial.write_bytes(data)
            os.replace(partial, self.folder / name)  # readers never see half a message
            names.append(name)
        return names

    def start(self) -> "SMTPSink":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
