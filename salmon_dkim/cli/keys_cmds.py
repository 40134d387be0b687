"""salmon-dkim keygen, dns-record, check-dns."""
from salmon_dkim.cli import main  # noqa: F401
