"""The catalog: lookups by any name, and what a bundle may carry of a destination's settings."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from publisher.catalog import Catalog, default_catalog


def catalog_of(tmp_path: Path, settings: list[dict[str, object]]) -> Catalog:
    path = tmp_path / "destinations.json"
    path.write_bytes(orjson.dumps({"destinations": [
        {"slug": "demo", "name": "Demo", "settings": settings}]}))
    return Catalog.from_file(path)


def test_public_settings_leave_out_secrets_and_null_defaults(tmp_path: Path) -> None:
    """Public settings are the non-secret ones; public defaults are theirs, nulls left out."""
    dest = catalog_of(tmp_path, [
        {"name": "apiKey", "type": "string", "required": True},
        {"name": "secretKey", "type": "string", "secret": True, "default": "s3cret"},
        {"name": "trackPages", "type": "boolean", "default": False},
        {"name": "events", "type": "array", "default": ["a"]},
        {"name": "region", "type": "string", "default": None},
    ]).get("demo")

    assert dest.public_settings == {"apiKey", "trackPages", "events", "region"}
    assert dict(dest.public_defaults) == {"trackPages": False, "events": ["a"]}
    with pytest.raises(TypeError):
        dest.public_defaults["trackPages"] = True  # type: ignore[index]


def test_shipped_catalog_public_settings_match_the_specs() -> None:
    """For every shipped destination the derived public settings agree with its setting specs."""
    for dest in default_catalog():
        specs = dest.settings.values()
        assert dest.public_settings == {s.name for s in specs if not s.secret}
        assert dest.public_defaults == {s.name: s.default for s in specs
                                        if not s.secret and s.default is not None}
