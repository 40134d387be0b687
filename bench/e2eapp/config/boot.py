"""The bench app: one mx listener, a SigningRelay to the bench's sink, salmon-dkim from E2E_DKIM_CONFIG."""
import logging

from salmon.routing import Router

from salmon_dkim.salmon import context
from salmon_dkim.salmon.receivers import Receivers, SMTPReceiver

from . import settings

logging.basicConfig(level=logging.WARNING)
settings.dkim = context.install(settings.dkim_config)
settings.relay = settings.dkim.relay(host="127.0.0.1", port=settings.sink_port)
# AuthenticatedPeers = 127.0.0.1 in the bench INI: the sign routes' mail earned a signature
settings.receiver = Receivers(SMTPReceiver("127.0.0.1", settings.mx_port, dkim=settings.dkim))
Router.defaults(**settings.router_defaults)
Router.load(settings.handlers)
