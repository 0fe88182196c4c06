"""Talking to one registry: references, digests, manifests, auth and the HTTP client."""
