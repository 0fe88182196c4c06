"""Benchmarks for regcast (``make bench``); not part of ``make test``."""
