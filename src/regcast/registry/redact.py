"""Remove secrets from URLs and text before they reach a log, an error or a job status."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that carry credentials on real registries and object stores
# (GCR access_token, S3/Azure signatures, distribution's _state holds no secret but is long).
_SECRET_PARAMS = re.compile(
    r"^(access_token|token|x-amz-signature|x-amz-credential|x-amz-security-token|sig|signature|"
    r"x-goog-signature|x-goog-credential|password|secret|code|refresh_token|_state)$",
    re.IGNORECASE,
)
_AUTH_HEADER_TEXT = re.compile(r"(?i)\b(authorization:\s*)(bearer|basic|jwt)?\s*[^\s,;]+")
_BEARER_TEXT = re.compile(r"(?i)\b(bearer|basic|jwt)\s+[A-Za-z0-9._~+/=-]{8,}")
REDACTED = "REDACTED"


def redact_url(url: str) -> str:
    """``url`` without userinfo and with secret-bearing query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _SECRET_PARAMS.match(k) else v) for k, v in pairs], safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Best-effort scrub of free text: known secret values, Authorization values, bearer tokens."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, REDACTED)
    text = _AUTH_HEADER_TEXT.sub(lambda m: m.group(1) + REDACTED, text)
    return _BEARER_TEXT.sub(lambda m: m.group(1) + " " + REDACTED, text)
