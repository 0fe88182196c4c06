"""Service jobs share registry connections and tokens per (registry, credentials, TLS settings) (#17).

Counted where they happen: new TCP connections at a proxy in front of the target registry, token
requests at its token server. Retry counts stay each job's own (tests of retries are unchanged).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import images
from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer
from tests.support.service import Service, basicauth, source
from tests.support.verify import assert_same_image


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("service")).start()
    yield svc
    svc.stop()


def test_consecutive_jobs_reuse_connections_and_tokens_never_across_credentials(
    service: Service, repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    tokens = token_reg.token_server
    assert tokens is not None
    proxy = TcpProxy(token_reg.port).start()
    try:

        def job(auth: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
            """The job's status, and the token requests and target connections it made."""
            asked, opened = len(tokens.requests), proxy.connections
            target = {"endpoint": f"http://127.0.0.1:{proxy.port}", "auth": auth, "image": f"{repo}/copy"}
            st = service.wait(service.submit({"source": source(src_reg, repo), "targets": [target]}))
            return st, len(tokens.requests) - asked, proxy.connections - opened

        first, first_tokens, first_connections = job(basicauth(token_reg))
        assert first["value"] == "FINISHED", first
        assert first_tokens >= 1
        assert first_connections >= 1
        assert_same_image(src_reg.http(), repo, "v1", token_reg.http(), f"{repo}/copy", "v1")

        second, second_tokens, second_connections = job(basicauth(token_reg))  # a no-op re-sync
        assert second["value"] == "FINISHED", second
        assert second["targets"][0]["retries"] == 0
        assert second_tokens == 0  # the first job's token, still valid
        assert second_connections == 0  # the first job's pooled connections

        # other credentials share nothing: a wrong password is refused, not served by the cached token
        third, third_tokens, third_connections = job(basicauth(token_reg, password="wrong-password"))
        assert third["value"] == "FAILED", third
        assert "bad credentials" in third["targets"][0]["error"], third
        assert third_connections >= 1  # a pool of its own
        assert third_tokens == 0  # the token server refused it (refusals are not recorded)
    finally:
        proxy.stop()
