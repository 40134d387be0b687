"""Settings of the test app, all from SALMON_DKIM_TEST_APP (JSON, written by tests/salmonserver.py)."""
import json
import os

_test = json.loads(os.environ["SALMON_DKIM_TEST_APP"])

workdir = _test["workdir"]
spool = _test["spool"]
host = _test["host"]
smtp_port = _test["smtp_port"]
submission_port = _test["submission_port"]
lmtp_port = _test["lmtp_port"]
lmtp_socket = _test["lmtp_socket"]
relay_config = {"host": host, "port": _test["sink_port"]}
configs = _test["configs"]  # context name -> INI file; "main" is the installed one

handlers = ["app.handlers.record", "app.handlers.inbound", "app.handlers.outbound", "app.handlers.concurrent"]
router_defaults = {"local": "[^@]+"}

# config/boot.py sets: relay, receiver, contexts
