"""Boot of the test app: what a Salmon app's config/boot.py does to use salmon-dkim."""
import logging
import os

from salmon import queue
from salmon.routing import Router

from salmon_dkim.salmon import context as glue
from salmon_dkim.config import load_settings
from salmon_dkim.salmon.receivers import LMTPReceiver, Receivers, SMTPReceiver

from . import settings

logging.basicConfig(filename=os.path.join(settings.workdir, "salmon.log"), level=logging.DEBUG,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")


class BrokenResolver:
    """A resolver with a bug: every lookup raises (for the internal-error tests)."""

    def txt(self, name):
        raise RuntimeError(f"simulated resolver bug looking up {name}")


# the context bare @dkim_verify / @dkim_sign and the relay use
dkim = glue.install(settings.configs["main"])

# other contexts, passed explicitly: @dkim_verify(settings.contexts["reject"])
settings.contexts = {name: glue.DKIM.from_config(path) for name, path in settings.configs.items()
                     if name not in ("main", "broken", "broken-accept")}
for name in ("broken", "broken-accept"):
    settings.contexts[name] = glue.DKIM.from_settings(load_settings(settings.configs[name]),
                                                      resolver=BrokenResolver())

settings.relay = dkim.relay(**settings.relay_config)

# [Submission] of main.ini: STARTTLS certificate and the credentials file `salmon-dkim passwd` writes
settings.receiver = Receivers(
    SMTPReceiver(settings.host, settings.smtp_port, dkim=dkim),
    SMTPReceiver(settings.host, settings.submission_port, role="submission", dkim=dkim),
    LMTPReceiver(settings.host, settings.lmtp_port, dkim=dkim),
    LMTPReceiver(socket=settings.lmtp_socket, dkim=dkim))

Router.defaults(**settings.router_defaults)
Router.load(settings.handlers)
Router.UNDELIVERABLE_QUEUE = queue.Queue(os.path.join(settings.workdir, "undeliverable"))
