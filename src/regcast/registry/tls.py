"""TLS trust: one verifying context per CA bundle in a process, reading the system CAs only when a
certificate may follow.

Loading the system CA file costs ~240 M instructions (~21 ms of CPU here) per context. aiohttp builds two
contexts when imported, although regcast hands every connector its own: ``aiohttp`` here is aiohttp
imported with CA loading skipped for those two (left without CAs, aiohttp's verifying default would
refuse every certificate, never accept one). ``trust`` gives the one context regcast uses; it reads
the system CAs when the server's first bytes of a connection are not plain text: the HTTPS attempt at a
plain-HTTP loopback registry (answered ``HTTP/1.0 400``) fails before any certificate and reads none.
A context without its CAs can only refuse, never accept, a certificate: every mistake here fails closed
(issue 17, docs/decisions.md "Start-up"). Modules import aiohttp from here.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading
from typing import Any


def _import_aiohttp() -> None:
    if "aiohttp" in sys.modules:
        return
    load = ssl.SSLContext.set_default_verify_paths
    ssl.SSLContext.set_default_verify_paths = lambda self: None  # type: ignore[method-assign]
    try:
        import aiohttp  # noqa: F401  (its module-level contexts are built now, without CAs)
    finally:
        ssl.SSLContext.set_default_verify_paths = load  # type: ignore[method-assign]


_import_aiohttp()
import aiohttp as aiohttp  # noqa: E402  (re-exported: the import above must come first)


class _Handshake(ssl.SSLObject):
    """The SSL object of a ``Trust`` context: before the handshake reads the server's first bytes, the
    context's system CAs are loaded unless those bytes are plain text (a plain-HTTP server's answer,
    which OpenSSL refuses before any certificate could be verified)."""

    _incoming: ssl.MemoryBIO | None = None  # until the server's first bytes were looked at

    def do_handshake(self) -> None:
        incoming = self._incoming
        if incoming is not None and incoming.pending:
            self._incoming = None
            first = incoming.read()  # a memory BIO cannot be peeked: read it whole and put it back
            try:
                incoming.write(first)
            except ssl.SSLError:  # its writer had ended it (asyncio never does): the bytes are gone
                raise ssl.SSLEOFError("TLS handshake: connection closed") from None
            if not first[:1].isalpha():  # a TLS record starts with its type (20-24), never a letter
                context = self.context
                assert isinstance(context, Trust)
                context.load_system()
        super().do_handshake()


class Trust(ssl.SSLContext):
    """A verifying client context (as ``ssl.create_default_context()``) whose system CAs are read when its
    first TLS server answers (or a look at its store needs them); an extra bundle is read at once."""

    sslobject_class = _Handshake
    _system_loaded = False
    _lock = threading.Lock()

    def load_system(self) -> None:
        with self._lock:
            if not self._system_loaded:
                self.load_default_certs()
                self._system_loaded = True

    def wrap_bio(self, incoming: ssl.MemoryBIO, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        obj = super().wrap_bio(incoming, *args, **kwargs)
        if isinstance(obj, _Handshake) and not self._system_loaded:
            obj._incoming = incoming
        return obj

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.load_system()
        return super().wrap_socket(*args, **kwargs)

    def get_ca_certs(self, binary_form: bool = False) -> Any:
        self.load_system()
        return super().get_ca_certs(binary_form)

    def cert_store_stats(self) -> dict[str, int]:
        self.load_system()
        return super().cert_store_stats()


_contexts: dict[tuple[str, int, int] | None, Trust] = {}
_contexts_lock = threading.Lock()


def trust(ca_bundle: str | None) -> ssl.SSLContext:
    """The context verifying against the system CAs plus ``ca_bundle`` (it adds, never replaces).

    One per bundle file version (path, mtime, size) in the process: a rotated bundle is read again
    by clients opened after the change. A missing or broken bundle raises here, when a client opens.
    """
    key = None
    if ca_bundle:
        st = os.stat(ca_bundle)
        key = (ca_bundle, st.st_mtime_ns, st.st_size)
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = Trust(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on, CERT_REQUIRED
            ctx.set_alpn_protocols(["http/1.1"])  # as aiohttp's own default context
            keylog = os.environ.get("SSLKEYLOGFILE")  # as ssl.create_default_context
            if keylog and not sys.flags.ignore_environment:
                ctx.keylog_filename = keylog
            if ca_bundle:
                ctx.load_verify_locations(cafile=ca_bundle)
            _contexts[key] = ctx
        return ctx
