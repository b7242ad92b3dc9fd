"""Publish a web source with the real publisher: compile -> canonical bytes -> bundle -> Redis.

The proofs publish exactly what the publisher would (``compile_source``, ``make_bundle``,
``RedisPublisher``), without the Config API around it: they are about what happens to a
bundle after it reaches Redis.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from publisher.core.bundle import Bundle, make_bundle
from publisher.core.catalog import default_catalog
from publisher.core.compile import canonical_bytes, compile_source
from publisher.core.model import Instance, Source
from publisher.publish import RedisPublisher

WRITE_KEY = "e2eWebSourceWriteKey000000000001"
UNKNOWN_WRITE_KEY = "e2eUnknownWriteKey00000000000099"


def web_source(write_key: str = WRITE_KEY) -> Source:
    return Source(id=1, workspace_id=1, slug="e2e-web", name="E2E web", type="web",
                  write_key=write_key)


def device(slug: str, api_key: str) -> Instance:
    return Instance(id=f"{slug}-device", catalog_slug=slug, display_name=f"{slug} (device)",
                    connection_mode="DEVICE", enabled=True, settings={"apiKey": api_key})


def cloud(slug: str, api_key: str) -> Instance:
    return Instance(id=f"{slug}-cloud", catalog_slug=slug, display_name=f"{slug} (cloud)",
                    connection_mode="CLOUD", enabled=True, settings={"apiKey": api_key})


def publish(client: redis.Redis, instances: Sequence[Instance], *, version: int,
            published_at: int, source: Source | None = None) -> Bundle:
    """Compile ``instances`` of the web source and publish them as ``version``."""
    source = source or web_source()
    document = compile_source(source, instances, default_catalog())
    bundle = make_bundle(canonical_bytes(document), version=version, revision=version,
                         published_at=published_at)
    RedisPublisher(client).write(source.write_key, bundle)
    return bundle
