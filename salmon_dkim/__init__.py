"""DKIM signing, verification and key management for the Salmon mail server framework.

The core modules (config, keys, dns, livedns, cache, canon, sign, verify, adsp,
policy, authresults, listmail, arc, activity) import nothing from Salmon; the
glue modules (receivers, decorators, relay, glue) do.
"""

__version__ = "0.1.0"
