"""Configuration: one INI file, checked against ``salmon_dkim.spec``, read into frozen Settings.

``load_settings(path)`` raises ConfigError with one line naming the file, the
option and the problem; :mod:`~salmon_dkim.config.settings` holds the types.
"""
from salmon_dkim.config.load import SPEC_PATH, ConfigError, load_settings
from salmon_dkim.config.settings import (DMARCSettings, DNSSettings, DomainKeys, ListSettings, LoggingSettings,
                                         MetricsSettings, SPFSettings,
                                         Settings, SigningSettings, VerificationSettings)

__all__ = ["SPEC_PATH", "ConfigError", "load_settings", "Settings", "SigningSettings", "VerificationSettings",
           "ListSettings", "DNSSettings", "LoggingSettings", "MetricsSettings", "DomainKeys",
           "SPFSettings", "DMARCSettings"]
