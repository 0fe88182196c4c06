"""regcast clients for the test registries."""

from __future__ import annotations

from pathlib import Path

from regcast.registry.auth import Credentials
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.registry.retry import RetryPolicy
from regcast.transfer.engine import Target
from regcast.transfer.remote import RegistryRepository
from tests.support.registry import RegistryServer

FAST_RETRY = RetryPolicy(attempts=3, backoff=0.05, max_backoff=0.2)


def client_for(
    reg: RegistryServer,
    ca_bundle: Path | None = None,
    *,
    password: str | None = None,
    read_only: bool = False,
    **options: object,
) -> RegistryClient:
    creds = None
    if reg.users:
        user, pw = next(iter(reg.users.items()))
        creds = Credentials(user, password if password is not None else pw)
    options.setdefault("retry", FAST_RETRY)
    opts = ClientOptions(ca_bundle=str(ca_bundle) if ca_bundle else None, **options)  # type: ignore[arg-type]
    return RegistryClient(parse_endpoint(reg.endpoint), credentials=creds, options=opts, read_only=read_only)


def target(
    reg: RegistryServer,
    repo: str,
    ref: str = "latest",
    ca_bundle: Path | None = None,
    overwrite: bool = False,
    **kw: object,
) -> Target:
    client = client_for(reg, ca_bundle, **kw)  # type: ignore[arg-type]
    return Target(reg.endpoint + "#" + repo, RegistryRepository(client, repo), ref, overwrite=overwrite)
