"""Remove secrets from URLs and text before they reach a log, an error or a job status."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that carry credentials on real registries and object stores (GCR access_token, S3
# and GCS presigned x-amz-*/x-goog-*, Azure SAS sig, CloudFront Signature/Policy/Key-Pair-Id, Docker Hub's
# Cloudflare blob redirect `verify`); distribution's _state holds no secret but is long.
# These three are compiled on first use (re's own cache), not at import: ~10 M instructions of every
# `regcast copy`'s start-up, which often redacts nothing (issue 17).
_SECRET_PARAMS = (
    r"(?i)^(access_token|token|x-amz-[a-z-]+|x-goog-[a-z-]+|sig|signature|policy|key-pair-id|verify|"
    r"awsaccesskeyid|googleaccessid|password|passwd|secret|client_secret|api_key|apikey|api-key|key|"
    r"private_token|id_token|session|auth|code|refresh_token|_state)$"
)
_AUTH_HEADER_TEXT = r"(?i)\b(authorization:\s*)(bearer|basic|jwt)?\s*[^\s,;]+"
_BEARER_TEXT = r"(?i)\b(bearer|basic|jwt)\s+[A-Za-z0-9._~+/=-]{8,}"
REDACTED = "REDACTED"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str, limit: int | None = None) -> str:
    """``text`` safe for one log line or terminal: control characters escaped (``\\n``, ``\\x1b``), cut at ``limit``."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class EscapeControls(logging.Filter):
    """A log filter: no record can forge a line or drive the terminal (messages carry remote text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _CONTROL.search(message):
            record.msg, record.args = printable(message), None
        return True


def redact_url(url: str, every_value: bool = False) -> str:
    """``url`` without userinfo and with secret-bearing query values replaced (all of them: ``every_value``,
    for URLs a caller wrote, such as the seed's ``auth.url`` with ``?api_key=``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        secret = [every_value or re.match(_SECRET_PARAMS, k) is not None for k, _ in pairs]
        query = urlencode([(k, REDACTED if s else v) for (k, v), s in zip(pairs, secret, strict=True)], safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def origin_only(url: str) -> str:
    """``scheme://host[:port]/...``: a URL whose every part but where it goes may be a secret (a hook's)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/..."


_URL_IN_TEXT = r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>()]+"


def redact_urls(text: str, shown: Callable[[str], str] = redact_url) -> str:
    """``text`` (a library's message) with every URL in it as ``shown`` writes it (``redact_url``: secret
    query values and userinfo out; ``origin_only``: nothing but where it goes)."""
    return re.sub(_URL_IN_TEXT, lambda m: shown(m.group()), text)


_USERINFO = re.compile(r"^((?:[^/?#@]*://)?)(.*)@(?![A-Za-z][A-Za-z0-9+._-]*:[0-9a-fA-F]{32,})")


def without_userinfo(text: str, limit: int = 120) -> str:
    """``text`` (a URL or reference a user wrote) as an error may echo it: a ``user:password@`` is cut
    (``https://***@host/...``, ``***@host:5000/v2``) even where ``urlsplit`` refuses the URL, which is
    exactly when the echo is needed; a digest's ``@sha256:`` is kept."""
    return _USERINFO.sub(r"\1***@", text.strip())[:limit]


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Best-effort scrub of free text: known secret values, Authorization values, bearer tokens."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, REDACTED)
    text = re.sub(_AUTH_HEADER_TEXT, lambda m: m.group(1) + REDACTED, text)
    return re.sub(_BEARER_TEXT, lambda m: m.group(1) + " " + REDACTED, text)
