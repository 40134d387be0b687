"""Where the example listens, where it relays, and its two domains.

``run.py`` sets the EXAMPLE_* environment variables from its options; the
defaults below are what ``make example`` uses.
"""
import os

HOST = os.environ.get("EXAMPLE_HOST", "127.0.0.1")

# mail for example.com and the lists at lists.example.com (verified)
receiver_config = {"host": HOST, "port": int(os.environ.get("EXAMPLE_MX_PORT", 8823))}
# mail from example.com users (signed, then relayed to the smarthost)
submission_config = {"host": HOST, "port": int(os.environ.get("EXAMPLE_SUBMISSION_PORT", 8587))}
# the smarthost: run.py's SMTP sink in the default configuration
relay_config = {"host": "127.0.0.1", "port": int(os.environ.get("EXAMPLE_SINK_PORT", 8825))}

dkim_config = os.environ.get("EXAMPLE_DKIM_CONFIG", "config/salmon_dkim.ini")

mail_domain = "example.com"
list_domain = "lists.example.com"
maildir = "maildir"
members_file = "lists/members.json"

handlers = ["app.handlers.inbound", "app.handlers.mailinglist", "app.handlers.submission"]

router_defaults = {"host": ".+"}
