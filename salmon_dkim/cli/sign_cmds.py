"""salmon-dkim sign, log, stats."""
from salmon_dkim.cli import main  # noqa: F401
