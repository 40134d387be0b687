"""The Salmon face: receivers, route decorators and a signing relay, thin over the core."""
