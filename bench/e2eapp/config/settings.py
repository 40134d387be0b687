"""Where the bench app listens and relays: set by bench/e2e.py through E2E_* environment variables."""
import os

mx_port = int(os.environ["E2E_MX_PORT"])
sink_port = int(os.environ["E2E_SINK_PORT"])
dkim_config = os.environ["E2E_DKIM_CONFIG"]
handlers = ["app.handlers.bench"]
router_defaults = {"host": ".+", "local": ".+"}  # (local) in a route is a pattern only if named here
