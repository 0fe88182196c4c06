"""Digests: validated before they are used in any URL, and hashed while bytes stream."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from regcast._exceptions import InvalidReference

_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)\Z")  # \Z: $ also matched before a final \n


def validate_digest(value: str) -> str:
    """Return ``value`` if it is ``alg:hex`` with a known algorithm and the right length, else raise.

    Guards against digests used as path parts (containers/image CVE-2024-3727).
    """
    m = _DIGEST_RE.match(value)
    if not m or len(m.group(2)) != _HEX_LENGTHS[m.group(1)]:
        raise InvalidReference(f"invalid digest {value[:80]!r}: expected sha256:<64 hex> or sha512:<128 hex>")
    return value


def announced_digest(header: str | None) -> str | None:
    """A registry's ``Docker-Content-Digest`` as a digest to check against, or None when it is absent or
    malformed (a bare hex seen in the wild, junk): the header is optional, so a broken one is ignored and
    the bytes are hashed instead. Upper-case hex names the same digest: written in lower case."""
    if not header:
        return None
    value = header.strip().lower()
    m = _DIGEST_RE.match(value)
    return value if m and len(m.group(2)) == _HEX_LENGTHS[m.group(1)] else None


def hasher_for(digest: str) -> Any:
    """A fresh hashlib object for the algorithm of ``digest`` (already validated)."""
    return hashlib.new(digest.split(":", 1)[0])


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
