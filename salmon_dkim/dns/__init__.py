"""DNS for the core: the Resolver protocol (txt and query), a zone-file source, live DNS, and its cache."""
