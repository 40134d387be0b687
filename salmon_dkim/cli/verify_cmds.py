"""salmon-dkim verify."""
from salmon_dkim.cli import main  # noqa: F401
