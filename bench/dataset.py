"""The bench data set: N web sources with realistic settings documents (~1.4–8.6 KB of JSON).

Each source connects a random handful of catalog destinations — device-mode ones with their
required settings filled in, plus a few cloud-mode ones — chosen by a seeded RNG, so the same
``N`` always gives the same sources. Each source is checked by the real rules and compiled by
the real compiler; the bytes, gzip and ETag come from the real ``make_bundle``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from edge.keyspace import Envelope
from publisher.core.catalog import Catalog, CatalogDestination, default_catalog
from publisher.core.model import Instance, Source
from publisher.core.rules import check_source
from publisher.core.setting_values import validate_settings

MIN_JSON = 2_000
MAX_JSON = 8_000


def write_key(i: int, salt: str = "bench") -> str:
    """A deterministic 32-character write key (hex, the shape of a real one)."""
    return hashlib.blake2b(f"{salt}-{i}".encode(), digest_size=16).hexdigest()


def unknown_key(i: int) -> str:
    """A well-formed write key that is never published."""
    return write_key(i, salt="unknown")


def settings_path(key: str) -> str:
    return f"/v1/projects/{key}/settings"


def _value(spec_type: str, name: str, rng: random.Random) -> Any:
    if spec_type == "boolean":
        return True
    if spec_type == "number":
        return rng.randint(1, 1000)
    if spec_type in ("array", "strings", "list"):
        return [f"{name}-{rng.randrange(10**6)}"]
    if spec_type in ("map", "text-map"):
        return {"key": f"{name}-{rng.randrange(10**6)}"}
    return f"{name}-{rng.getrandbits(48):012x}"


@dataclass(frozen=True)
class SourceSpec:
    source: Source
    instances: tuple[Instance, ...]


class SourceFactory:
    """Builds source ``i`` with its instances for a JSON size drawn between MIN_JSON and
    MAX_JSON; the size is estimated from the catalog, so a bundle lands near the drawn size
    and the set leaves that range a little (100,000 sources: 1,448–8,588 B, bench/results)."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or default_catalog()
        usable = [d for d in self.catalog if not d.hidden and not d.is_data_lakes]
        self.device = [d for d in usable if d.device_web]
        self.cloud = [d for d in usable if d.cloud_web and not d.device_web]

    def _instance(self, dest: CatalogDestination, mode: str, n: int,
                  rng: random.Random) -> Instance:
        settings = {s.name: _value(s.type, s.name, rng)
                    for s in dest.settings.values() if s.required}
        validate_settings(dest, settings, enabled=True, where=dest.slug)
        return Instance(id=f"{dest.slug}-{n}", catalog_slug=dest.slug, display_name=dest.name,
                        connection_mode=mode,  # type: ignore[arg-type]
                        enabled=True, settings=settings)

    def build(self, i: int, target_json: int) -> SourceSpec:
        rng = random.Random(i)
        key = write_key(i)
        source = Source(id=i + 1, workspace_id=1, slug=f"bench-{i}", name=f"Bench {i}",
                        type="web", write_key=key, revision=1)
        device = rng.sample(self.device, k=min(len(self.device), 40))
        cloud = rng.sample(self.cloud, k=rng.randint(1, 4))
        instances = [self._instance(d, "CLOUD", n, rng) for n, d in enumerate(cloud)]
        # Device-mode entries carry the catalog defaults, which is where the size comes from;
        # add destinations until the estimate reaches this source's target size.
        size = 1_100
        for n, dest in enumerate(device):
            if size >= target_json:
                break
            instances.append(self._instance(dest, "DEVICE", 100 + n, rng))
            size += 160 + sum(len(repr(s.default)) + len(name) + 8
                              for name, s in dest.settings.items()
                              if not s.secret and s.default is not None)
        return SourceSpec(source, tuple(instances))


# One published bundle exactly as Redis holds it (the key files, nginx's files, the probes).
Published = Envelope


def compiled(indices: Iterable[int], *, published_at: int,
             factory: SourceFactory | None = None) -> Iterator[tuple[SourceSpec, Published]]:
    """Sources ``indices`` checked, compiled and bundled by the real publisher code."""
    from publisher.core.bundle import make_bundle
    from publisher.core.compile import canonical_bytes, compile_source

    factory = factory or SourceFactory()
    for i in indices:
        target = random.Random(-1 - i).randint(MIN_JSON, MAX_JSON)
        spec = factory.build(i, target)
        check_source(spec.source, spec.instances, factory.catalog)
        raw = canonical_bytes(compile_source(spec.source, spec.instances, factory.catalog))
        bundle = make_bundle(raw, version=1, revision=1, published_at=published_at)
        yield spec, Envelope(write_key=spec.source.write_key, version=bundle.version,
                             json=bundle.json, gzip=bundle.gzip, etag=bundle.etag,
                             published_at=bundle.published_at, revision=bundle.revision)
