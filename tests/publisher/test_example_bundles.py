"""The example workspace compiles to exactly the documents in tests/publisher/golden/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from publisher import workspace_file
from publisher.core.catalog import default_catalog
from publisher.service import Service
from publisher.store import Store

ROOT = Path(__file__).parents[2]
GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = json.loads((ROOT / "examples" / "workspace.json").read_text())
SOURCES = [s["slug"] for s in EXAMPLE["sources"]]


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each example source's published document (SQLite only: no Redis needed to compile)."""
    store = Store.open(str(tmp_path_factory.mktemp("example") / "db.sqlite"))
    service = Service(store, default_catalog(), None)
    decl = workspace_file.parse((ROOT / "examples" / "workspace.json").read_bytes())
    workspace_file.apply(service, decl)
    ws = store.get_workspace("acme")
    assert ws is not None
    out = {}
    for source in store.list_sources(ws.id):
        bundle = store.current_bundle(source.id)
        assert bundle is not None
        out[source.slug] = orjson.loads(bundle.json)
    store.close()
    return out


@pytest.mark.parametrize("slug", SOURCES)
def test_example_document_is_exactly_the_golden_one(documents: dict[str, dict[str, Any]],
                                                    slug: str) -> None:
    """The compiled document equals the reviewed golden file, key for key."""
    golden = json.loads((GOLDEN / f"{slug}.json").read_text())

    assert documents[slug] == golden


def _values(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _values(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _values(x)]
    return [obj]


def test_no_cloud_mode_or_secret_value_in_any_bundle(
        documents: dict[str, dict[str, Any]]) -> None:
    """No value of a cloud-mode instance's settings or of a secret setting reaches a bundle."""
    catalog = default_catalog()
    withheld = set()
    for source in EXAMPLE["sources"]:
        for dest in source["destinations"]:
            secret = catalog.get(dest["destination"]).secret_settings
            for name, value in dest["settings"].items():
                if dest["connection_mode"] == "CLOUD" or name in secret:
                    withheld.update(v for v in _values(value) if isinstance(v, str))

    published = {v for doc in documents.values() for v in _values(doc) if isinstance(v, str)}

    assert withheld and not withheld & published


def test_at_most_one_entry_per_destination(documents: dict[str, dict[str, Any]]) -> None:
    """Every integrations key names one catalog destination, and each destination appears once."""
    catalog = default_catalog()
    for doc in documents.values():
        slugs = [catalog.get(key).slug for key in doc["integrations"] if key != "Segment.io"]
        assert len(slugs) == len(set(slugs))


def test_server_source_carries_only_segment_io(documents: dict[str, dict[str, Any]]) -> None:
    """The server source's bundle lists no destination at all, only Segment.io."""
    assert list(documents["backend"]["integrations"]) == ["Segment.io"]
