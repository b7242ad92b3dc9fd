"""The catalog: lookups by any name, and what a bundle may carry of a destination's settings."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from publisher.core.catalog import Catalog, default_catalog
from publisher.core.setting_values import MAX_SETTING_DEPTH, nesting, validate_settings
from publisher.errors import SettingError


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


def nested(depth: int) -> object:
    value: object = "x"
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


@pytest.mark.parametrize(("value", "depth"), [
    pytest.param("x", 0, id="scalar"),
    pytest.param([], 1, id="empty-array"),
    pytest.param({"a": [1, {"b": []}], "c": 2}, 4, id="deepest-branch-counts"),
    pytest.param(nested(MAX_SETTING_DEPTH), MAX_SETTING_DEPTH, id="at-the-limit"),
    pytest.param(nested(5000), MAX_SETTING_DEPTH + 1, id="counting-stops-past-the-limit"),
])
def test_nesting(value: object, depth: int) -> None:
    """Levels of arrays and objects are counted along the deepest branch, up to limit + 1."""
    assert nesting(value, MAX_SETTING_DEPTH) == depth


def test_settings_nested_past_the_limit_are_refused() -> None:
    """A setting value nested deeper than MAX_SETTING_DEPTH is a SettingError naming it; one
    at the limit is accepted."""
    amplitude = default_catalog().get("amplitude")
    ok = {"mapQueryParams": nested(MAX_SETTING_DEPTH - 1)}  # (odd depths: an object, a map)

    assert validate_settings(amplitude, ok, enabled=False) == ok
    with pytest.raises(SettingError, match="setting 'mapQueryParams' of Amplitude nests "
                                           "arrays and objects more than 32 levels deep"):
        validate_settings(amplitude, {"mapQueryParams": nested(MAX_SETTING_DEPTH + 1)},
                          enabled=False)
