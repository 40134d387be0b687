"""DNS for the core: the TXTResolver protocol, a zone-file source, live DNS, and its cache."""
