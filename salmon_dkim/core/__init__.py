"""The DKIM core: functions and small classes over message bytes, with no Salmon import.

One home for each building block: message parsing (``message``), tag lists
(``tags``), canonicalization (``canon``), signatures (``crypto``), keys
(``keys``, ``keyfetch``, and their ``lifecycle``: pending, active, retiring, retired), result types (``results``), and the methods built on
them (``dkim``, ``domainkeys``, ``arc``, ``adsp``), what to do about them
(``policy``) and how we say it (``authres``).
"""
