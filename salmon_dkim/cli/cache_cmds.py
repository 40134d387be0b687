"""salmon-dkim cache."""
from salmon_dkim.cli import main  # noqa: F401
