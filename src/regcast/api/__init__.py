"""The REST API: the seed's routes (byte-compatible bodies) plus list, cancel and health."""
