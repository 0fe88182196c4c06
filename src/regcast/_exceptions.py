"""The one exception tree of regcast.

Every error regcast raises on purpose is a ``RegcastError``; errors of the libraries below
(aiohttp, ssl, sqlalchemy) are translated at one boundary (``registry/_transport.py`` for HTTP,
``jobs/_db.py`` for the service database: jobs and mirrors) so callers never need to know which library failed.
Messages never hold a secret: URLs are redacted before they reach an exception.

Whether trying again can help is a property of the error (``retryable``, as go-containerregistry's
``Temporary()``), decided here and nowhere else: the request retries, the blob re-uploads and
the job-level target retries all ask ``is_retryable(exc)``.

    RegcastError
    ├── ConfigError                  bad settings or flags
    ├── InvalidInput                 a reference, digest, repository name or request field is wrong
    │   ├── InvalidReference
    │   └── OutboundRefused          a URL or address the outbound policy refuses (SSRF guard, allow-lists)
    ├── RegistryError                anything that went wrong talking to one registry
    │   ├── RegistryUnreachable      DNS, connect, TLS, timeout, reset: no usable HTTP answer
    │   │   └── BodyBroken           the answer began, its body broke off (the request is sent again)
    │   ├── RegistryResponseError    an HTTP answer we did not want (carries status, OCI code, method, URL)
    │   │   ├── AuthenticationFailed 401/403, or the token server refused
    │   │   ├── TokenRejected        401 on a streamed upload: the token expired mid-job (retryable)
    │   │   ├── UploadLost           the registry lost an upload session or got bytes that do not hash (retryable)
    │   │   ├── NotFound             404 (manifest, blob, repository)
    │   │   └── RateLimited          429
    │   └── ProtocolViolation        an answer that breaks the spec (missing Location, bad token JSON...)
    ├── ContentError                 bytes that are not what they claim
    │   ├── DigestMismatch           a blob or manifest whose bytes do not hash to its digest
    │   ├── ManifestTooLarge         over the 4 MiB cap
    │   ├── GraphTooLarge            the whole graph over a REGCAST_MAX_GRAPH_* limit (manifest bytes, children, blobs)
    │   └── UnsupportedManifest      a media type or JSON we cannot copy
    ├── LayoutError                  an OCI image layout (directory or archive) that cannot be read or written
    └── JobError                     job store / worker problems
        ├── JobStoreUnavailable      the job database did not answer (down, frozen, timed out): retry later
        ├── StoreConflict            a write refused by a unique key (another replica wrote it first)
        ├── SchemaUnknown            the database's schema revision is unknown here (a newer regcast wrote it)
        └── CredentialsUnreadable    a job's stored credentials cannot be decrypted with this key
"""

from __future__ import annotations

import enum

# Answers that say "not now" rather than "no": the same request may pass later.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class RegcastError(Exception):
    """Base of every error regcast raises on purpose."""

    @property
    def retryable(self) -> bool:
        """May the same work pass if tried again? Permanent unless a subclass says otherwise."""
        return False


def is_retryable(exc: BaseException) -> bool:
    """The one retry decision: regcast errors say so themselves; OS-level I/O errors may pass; bugs never."""
    if isinstance(exc, RegcastError):
        return exc.retryable
    return isinstance(exc, OSError | TimeoutError)


class ConfigError(RegcastError):
    """Settings or flags that cannot work."""


class InvalidInput(RegcastError):
    """Input from a user that regcast refuses before using it."""


class InvalidReference(InvalidInput):
    """An image reference, repository name or digest that is not well formed."""


class OutboundRefused(InvalidInput):
    """A request regcast will not send: a forbidden address, a host off the allow-list (never retried)."""


class RegistryError(RegcastError):
    """Something went wrong talking to one registry; ``registry`` names it (host[:port])."""

    def __init__(self, message: str, *, registry: str = "") -> None:
        super().__init__(message)
        self.registry = registry


class Failure(enum.StrEnum):
    """Why no HTTP answer came; decides whether trying again can help."""

    CONNECT = "connect"  # refused, unreachable: the registry may be restarting
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"  # reset or closed mid-request
    DNS_TEMPORARY = "dns-temporary"  # the resolver did not answer (EAI_AGAIN)
    NAME_NOT_FOUND = "name-not-found"  # the name does not exist
    TLS_HANDSHAKE = "tls-handshake"  # the host does not speak TLS (a plain-HTTP registry)
    CERTIFICATE = "certificate"  # TLS works but the certificate is not trusted
    INVALID_URL = "invalid-url"


PERMANENT_FAILURES = frozenset(
    {Failure.NAME_NOT_FOUND, Failure.TLS_HANDSHAKE, Failure.CERTIFICATE, Failure.INVALID_URL}
)


class RegistryUnreachable(RegistryError):
    """No usable HTTP answer: DNS, connection, TLS handshake, timeout or reset (``failure`` says which)."""

    def __init__(self, message: str, *, registry: str = "", failure: Failure = Failure.CONNECT) -> None:
        super().__init__(message, registry=registry)
        self.failure = failure

    @property
    def retryable(self) -> bool:
        return self.failure not in PERMANENT_FAILURES


class BodyBroken(RegistryUnreachable):
    """An answer whose body broke off (reset, stalled) after its headers: the request path's retries never
    saw it, so the reader sends the request again (``request.reading``)."""


class RegistryResponseError(RegistryError):
    """An HTTP answer regcast did not expect.

    Carries the status, the first OCI error code of the body (if any), the method and the URL with
    every secret removed, so the message can be shown and logged as it is.
    """

    def __init__(
        self,
        message: str,
        *,
        registry: str = "",
        status: int = 0,
        code: str = "",
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, registry=registry)
        self.status = status
        self.code = code
        self.method = method
        self.url = url
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES


class AuthenticationFailed(RegistryResponseError):
    """401/403 after credentials were offered, or the token server refused them. ``anonymous``: none were
    offered (a private repository read without credentials): the hint is to give some, not to check them."""

    anonymous = False


class TokenRejected(RegistryResponseError):
    """A 401 on a streamed request that could not be replayed; a fresh token fixes it (retryable)."""

    @property
    def retryable(self) -> bool:
        return True


class UploadLost(RegistryResponseError):
    """An upload PATCH/PUT refused because the session is gone (BLOB_UPLOAD_UNKNOWN: a restarted registry,
    replicas behind a balancer without shared state) or its bytes do not hash (DIGEST_INVALID: regcast sends
    only verified bytes, so they changed on the way): a new session may pass."""

    @property
    def retryable(self) -> bool:
        return True


class NotFound(RegistryResponseError):
    """404: the manifest, blob or repository does not exist."""


class RateLimited(RegistryResponseError):
    """429: the registry asks us to slow down (``retry_after`` in seconds, if it said)."""


class ProtocolViolation(RegistryError):
    """An answer that breaks the distribution spec (missing Location, unparsable token...).

    Not retryable: the same registry gives the same answer again; the message says what to fix.
    """


class ContentError(RegcastError):
    """Bytes that are not what they claim to be."""


class DigestMismatch(ContentError):
    """Content whose bytes do not hash to the digest it was asked for by (a corrupt read: retryable)."""

    @property
    def retryable(self) -> bool:
        return True


class ManifestTooLarge(ContentError):
    """A manifest over the size cap (4 MiB by default)."""


class GraphTooLarge(ContentError):
    """An image graph over one of the limits (total manifest bytes, child manifests, blobs)."""


class UnsupportedManifest(ContentError):
    """A manifest regcast cannot copy: unknown media type, schema1, or broken JSON."""


class LayoutError(RegcastError):
    """An OCI image layout directory or archive that is missing, malformed or cannot be written."""


class JobError(RegcastError):
    """Job store or worker problem."""


class JobStoreUnavailable(JobError):
    """The job database is down, unreachable or did not answer in time; trying again later can work."""


class StoreConflict(JobError):
    """A write the database refused by a unique key: another replica (or delivery) wrote it first."""


class SchemaUnknown(JobError):
    """The database's schema revision is not one of this regcast's: a newer regcast migrated it."""


class CredentialsUnreadable(JobError):
    """A job's stored credentials cannot be decrypted: this process has another ``REGCAST_SECRET_KEY``."""
