"""Durable jobs: models (tables), store (all SQL), secrets (encrypted credentials), worker."""
