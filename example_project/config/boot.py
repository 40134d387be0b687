"""Boot the example: salmon-dkim from config/salmon_dkim.ini, a signing relay, two listeners."""
import logging.config
import warnings

from salmon import queue
from salmon.routing import Router

from salmon_dkim.salmon import context as glue
from salmon_dkim.salmon.receivers import Receivers, SMTPReceiver

from . import settings

logging.config.fileConfig("config/logging.conf", disable_existing_loggers=False)
# Salmon warns about its own charset handling whenever it renders a MailResponse
warnings.filterwarnings("ignore", category=UnicodeWarning, module="salmon.encoding")

settings.dkim = glue.install(settings.dkim_config)  # before Router.load: handlers use it
settings.relay = settings.dkim.relay(**settings.relay_config)
settings.receiver = Receivers(SMTPReceiver(role="mx", **settings.receiver_config),
                              SMTPReceiver(role="submission", **settings.submission_config))

Router.defaults(**settings.router_defaults)
Router.load(settings.handlers)
Router.RELOAD = False
Router.UNDELIVERABLE_QUEUE = queue.Queue("run/undeliverable")
