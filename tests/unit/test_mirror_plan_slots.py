"""A pass's checks are bounded per registry: its connection pool, or the document's max_concurrency when lower."""

from __future__ import annotations

import asyncio
import json

from regcast.config import load_settings
from regcast.mirrors.clients import ClientPool
from regcast.mirrors.document import load_document
from regcast.mirrors.plan import Planner


def test_each_registry_gets_its_own_bound() -> None:
    doc = load_document(
        json.dumps(
            {
                "version": 1,
                "registries": [{"host": "127.0.0.1:5001", "max_concurrency": 3}, {"host": "127.0.0.1:5002"}],
                "mirrors": [
                    {"name": "m", "source": "127.0.0.1:5000/a", "targets": ["127.0.0.1:5001", "127.0.0.1:5002"]}
                ],
            }
        ),
        {},
    )
    settings = load_settings(connections_per_registry=10)

    async def bounds() -> dict[str, int]:
        planner = Planner(doc, ClientPool(doc, settings))
        assert planner.slots("127.0.0.1:5001") is planner.slots("127.0.0.1:5001")
        return {h: planner.slots(h)._value for h in ("127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002")}

    assert asyncio.run(bounds()) == {"127.0.0.1:5000": 10, "127.0.0.1:5001": 3, "127.0.0.1:5002": 10}
