"""Is a delivery signed with a registry's events secret? Pure and constant-time.

Senders prove they know the secret in one of the ways they can be configured for:
- ``Authorization: Bearer <secret>``: distribution (a header of its ``notifications`` endpoint),
  CloudEvents senders, anything that can set a header;
- ``Authorization: <secret>``: Harbor sends its policy's "auth header" value as it is;
- ``X-Hub-Signature-256: sha256=<HMAC-SHA256(secret, body)>``: GitHub package events;
- ``?token=<secret>`` in the URL: Docker Hub webhooks, which can set nothing else (regcast keeps the
  query string out of its logs).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def _same(given: str, secret: str) -> bool:
    return hmac.compare_digest(given.encode(), secret.encode())


def signed_with(secret: str, headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> bool:
    """``headers`` with lower-cased names. Every way is checked; none short-circuits on a near match."""
    ok = False
    auth = headers.get("authorization", "").strip()
    if auth:
        scheme, _, rest = auth.partition(" ")
        ok |= scheme.lower() == "bearer" and _same(rest.strip(), secret)
        ok |= _same(auth, secret)
    hub = headers.get("x-hub-signature-256", "").strip()
    if hub.startswith("sha256="):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        ok |= _same(hub[len("sha256=") :].lower(), expected)
    token = query.get("token")
    if token:
        ok |= _same(token, secret)
    return ok
