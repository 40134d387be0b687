"""DKIM signing, verification and key management for the Salmon mail server framework.

Layers: ``core`` (DKIM, DomainKeys, ARC, ADSP, policy, Authentication-Results
over bytes), ``dns`` (resolvers and their cache) and ``config`` (the INI file)
import nothing from Salmon; ``salmon`` (receivers, decorators, relay, the
context built at boot) does; ``cli`` is the ``salmon-dkim`` command.
"""

__version__ = "0.1.0"
