"""DKIM signing, verification and key management for the Salmon mail server framework.

The core modules (config, keys, dns, canon, sign, verify, policy, authresults,
listmail) import nothing from Salmon; the glue modules (receivers, decorators,
relay) do.
"""

__version__ = "0.1.0"
