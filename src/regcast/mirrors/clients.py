"""One registry client per (registry, role) for a pass: the document's credentials and TLS settings.

Sources get read-only clients (nothing is ever written to a source). Credentials come from the
document's ``registries`` entry, else from the Docker config file, as ``regcast copy`` reads it.
In the service a pool may take its clients from the process's ``ConnectionPools`` (the worker's):
a mirror run then reuses the connections, tokens and settled ping of the runs and jobs before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from regcast.config import Settings
from regcast.layouts.repository import LayoutRepository, open_layout
from regcast.mirrors.document import MirrorDocument
from regcast.mirrors.select import Repo
from regcast.registry.auth import Credentials
from regcast.registry.client import RegistryClient
from regcast.registry.dockerconfig import stored_credentials
from regcast.registry.guards import check_registry_allowed
from regcast.registry.limits import Limits, LimitSettings, RateWait
from regcast.registry.reference import endpoint_for_registry
from regcast.transfer.remote import RegistryRepository
from regcast.transfer.repository import Repository

if TYPE_CHECKING:
    from regcast.registry.pool import ConnectionPools


def _uncounted(_what: str) -> None:
    """A plan's retries are logged by the client; only its waits are shown (``on_wait``)."""


def configure_limits(limits: Limits, doc: MirrorDocument) -> None:
    """The document's per-registry limits into the process's ``Limits`` (one per registry, whatever its name)."""
    for r in doc.registries:
        limits.configure(r.host, LimitSettings(r.max_concurrency, r.requests_per_second, r.rate_limit_min))


# said where the Docker config keeps a registry's credentials in a helper regcast does not run
DOCUMENT_REMEDY = "give its username and password in the mirror document's registries"


class ClientPool:
    def __init__(
        self,
        doc: MirrorDocument,
        settings: Settings,
        limits: Limits | None = None,
        connections: ConnectionPools | None = None,
        on_wait: Callable[[RateWait], None] | None = None,
    ) -> None:
        self.doc = doc
        self.settings = settings
        self.limits = limits or Limits()
        self.connections = connections
        self.on_wait = on_wait  # told when a client waits on a registry's rate limit (a run's status)
        self._watching = contextlib.ExitStack()
        configure_limits(self.limits, doc)
        self._clients: dict[tuple[str, bool], RegistryClient] = {}
        self._layouts: dict[str, LayoutRepository] = {}

    def _get(self, registry: str, read_only: bool) -> RegistryClient:
        key = (registry.lower(), read_only)
        client = self._clients.get(key)
        if client is None:
            conf = self.doc.registry(registry)
            verify = conf.tls_verify if conf else True
            endpoint = endpoint_for_registry(registry, tls_verify=verify)
            check_registry_allowed(endpoint.host, self.settings.registry_patterns, self.settings.block_private)
            creds = (
                Credentials(conf.username, conf.password or "")
                if conf and conf.username is not None
                else stored_credentials(registry, DOCUMENT_REMEDY)
            )
            make = self.connections.client if self.connections is not None else RegistryClient
            client = make(
                endpoint,
                credentials=creds,
                options=self.settings.client_options(verify_tls=verify, host=endpoint.host),
                read_only=read_only,
                limit=self.limits.for_host(registry),
            )
            self._clients[key] = client
            if self.on_wait is not None:
                self._watching.enter_context(client.watch_retries(_uncounted, self.on_wait))
        return client

    def source(self, registry: str) -> RegistryClient:
        return self._get(registry, True)

    def target(self, registry: str) -> RegistryClient:
        return self._get(registry, False)

    def layout(self, where: str) -> LayoutRepository:
        """A layout target, written once at the end of the pass (``flush``): one archive write for all tags."""
        if where not in self._layouts:
            self._layouts[where] = open_layout(where, writable=True, autocommit=False)
        return self._layouts[where]

    def repository(self, repo: Repo) -> Repository:
        """Where a target's images go: a layout, or the repository at its registry."""
        if repo.is_layout:
            return self.layout(repo.registry)
        return RegistryRepository(self.target(repo.registry), repo.repository)

    def layouts(self) -> list[tuple[str, LayoutRepository]]:
        """The layout targets opened so far (written by ``flush`` at the end of a pass)."""
        return list(self._layouts.items())

    async def close(self) -> None:
        self._watching.close()
        await asyncio.gather(*(c.close() for c in self._clients.values()), return_exceptions=True)
        self._clients.clear()
        for layout in self._layouts.values():
            await layout.close()
        self._layouts.clear()
