"""EdgeSettings: every option from the environment, with defaults, validated at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.settings import OPTIONS, EdgeSettings, SettingsError, settings_table


def test_defaults_when_environment_is_empty() -> None:
    """An empty environment gives the documented defaults."""
    settings = EdgeSettings.from_env({})

    assert settings == EdgeSettings()
    assert (settings.host, settings.port, settings.propagation_budget) == ("127.0.0.1", 8080, 1800)
    assert settings.instant is False
    assert settings.assets_dir == "var/assets"
    assert settings.assets_upstream == "https://cdn.segment.com"


def test_every_variable_is_read(tmp_path: Path) -> None:
    """Each variable sets its field, parsed to the field's type."""
    env = {
        "EDGE_HOST": "0.0.0.0", "EDGE_PORT": "9000", "EDGE_WORKERS": "2",
        "EDGE_LOG_LEVEL": "WARNING", "REDIS_URL": "redis://10.0.0.1:6380/2",
        "EDGE_REDIS_TIMEOUT": "0.1", "EDGE_REDIS_CONNECT_TIMEOUT": "0.2",
        "EDGE_REDIS_MAX_CONNECTIONS": "8", "EDGE_REDIS_RETRY_INTERVAL": "2.5",
        "EDGE_REFRESH_INTERVAL": "15", "EDGE_CACHE_MAX_ENTRIES": "50",
        "EDGE_NEGATIVE_TTL": "0", "EDGE_NEGATIVE_MAX_ENTRIES": "7",
        "EDGE_NOT_FOUND_MAX_AGE": "3", "EDGE_MAX_AGE": "30", "EDGE_S_MAXAGE": "120",
        "EDGE_STALE_WHILE_REVALIDATE": "10", "EDGE_STALE_IF_ERROR": "600",
        "EDGE_RETRY_AFTER": "9", "EDGE_PROPAGATION_BUDGET": "900",
        "EDGE_CACHES_HONOUR_AGE": "yes", "EDGE_INSTANT": "true", "EDGE_FAST_PATH": "off",
        "EDGE_ASSETS_DIR": str(tmp_path), "EDGE_ASSETS_LATEST_MAX_AGE": "60",
        "EDGE_ANALYTICS_JS": __file__, "EDGE_ANALYTICS_JS_MAX_AGE": "30",
        "EDGE_ASSETS_UPSTREAM": "http://mirror.internal:8000", "EDGE_ASSETS_UPSTREAM_TIMEOUT": "2",
        "EDGE_ASSETS_MAX_BYTES": "1000", "EDGE_ASSETS_NEGATIVE_TTL": "3",
        "EDGE_ASSETS_RETRY_AFTER": "4",
        "EDGE_KEEP_ALIVE_TIMEOUT": "7", "EDGE_HEADER_TIMEOUT": "2.5",
        "EDGE_MAX_HEADER_LINE": "4096", "EDGE_MAX_HEADER_SIZE": "16384",
        "EDGE_MAX_CONNECTIONS": "100",
        "EDGE_REDIS_SENTINELS": "10.0.0.5:26379,[::1]:26380",
        "EDGE_REDIS_SENTINEL_SERVICE": "cdn", "EDGE_REDIS_SENTINEL_PASSWORD": "s3",
        "EDGE_REDIS_ROLE": "Primary",
    }
    assert set(env) == {o.env for o in OPTIONS}  # the test covers every option

    settings = EdgeSettings.from_env(env)

    assert settings == EdgeSettings(
        host="0.0.0.0", port=9000, workers=2, log_level="warning",
        redis_url="redis://10.0.0.1:6380/2", redis_timeout=0.1, redis_connect_timeout=0.2,
        redis_max_connections=8, redis_retry_interval=2.5, refresh_interval=15.0,
        cache_max_entries=50, negative_ttl=0.0, negative_max_entries=7, not_found_max_age=3,
        max_age=30, s_maxage=120, stale_while_revalidate=10, stale_if_error=600,
        retry_after=9, propagation_budget=900, caches_honour_age=True, instant=True,
        fast_path=False, assets_dir=str(tmp_path), assets_latest_max_age=60,
        analytics_js=__file__, analytics_js_max_age=30,
        assets_upstream="http://mirror.internal:8000", assets_upstream_timeout=2.0,
        assets_max_bytes=1000, assets_negative_ttl=3, assets_retry_after=4,
        keep_alive_timeout=7, header_timeout=2.5, max_header_line=4096, max_header_size=16384,
        max_connections=100,
        redis_sentinels="10.0.0.5:26379,[::1]:26380", redis_sentinel_service="cdn",
        redis_sentinel_password="s3", redis_role="primary",
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"EDGE_PORT": "eighty"}, "EDGE_PORT='eighty' is invalid: expected an integer",
                     id="port-not-int"),
        pytest.param({"EDGE_PORT": "70000"}, "EDGE_PORT=70000 is invalid: must be a TCP port",
                     id="port-range"),
        pytest.param({"EDGE_MAX_HEADER_LINE": "65536"},
                     "EDGE_MAX_HEADER_SIZE=32768 is invalid: must be >= EDGE_MAX_HEADER_LINE=65536",
                     id="head-below-line"),
        pytest.param({"EDGE_WORKERS": "100000"},
                     "EDGE_WORKERS=100000 is invalid: must be from 1 to 1024", id="workers-typo"),
        pytest.param({"EDGE_REFRESH_INTERVAL": "0"}, "EDGE_REFRESH_INTERVAL=0.0 is invalid",
                     id="refresh-zero"),
        pytest.param({"EDGE_REDIS_TIMEOUT": "-1"}, "EDGE_REDIS_TIMEOUT=-1.0 is invalid",
                     id="negative-timeout"),
        pytest.param({"EDGE_MAX_AGE": "1.5"}, "EDGE_MAX_AGE='1.5' is invalid: expected an integer",
                     id="max-age-float"),
        pytest.param({"EDGE_INSTANT": "maybe"},
                     "EDGE_INSTANT='maybe' is invalid: expected a boolean", id="bool"),
        pytest.param({"REDIS_URL": "http://x"}, "REDIS_URL='http://x' is invalid: must start with",
                     id="redis-scheme"),
        pytest.param({"REDIS_URL": "redis://h:6379/abc"},
                     "is invalid: names database 'abc'; a database is a number",
                     id="redis-database-not-a-number"),
        pytest.param({"REDIS_URL": "redis://h:x/0"}, "is invalid: has no valid port",
                     id="redis-port-not-a-number"),
        pytest.param({"EDGE_ASSETS_DIR": "/dev/null"},
                     "EDGE_ASSETS_DIR='/dev/null' is invalid: is not a directory", id="assets"),
        pytest.param({"EDGE_LOG_LEVEL": "loud"}, "EDGE_LOG_LEVEL='loud' is invalid: must be one of",
                     id="log-level"),
        pytest.param({"EDGE_CACHE_MAX_ENTRIES": "0"}, "EDGE_CACHE_MAX_ENTRIES=0 is invalid",
                     id="cache-size"),
        pytest.param({"EDGE_REDIS_TIMEOUT": "inf"},
                     "EDGE_REDIS_TIMEOUT=inf is invalid: must be a number <= 2147483647",
                     id="infinite-timeout"),
        pytest.param({"EDGE_REFRESH_INTERVAL": "1e309"},
                     "EDGE_REFRESH_INTERVAL=inf is invalid: must be a number <= 2147483647",
                     id="infinite-refresh"),
        pytest.param({"EDGE_NEGATIVE_TTL": "NaN"},
                     "EDGE_NEGATIVE_TTL=nan is invalid: must be a number <= 2147483647",
                     id="nan-ttl"),
        pytest.param({"EDGE_STALE_IF_ERROR": "99999999999999999999"},
                     "EDGE_STALE_IF_ERROR=99999999999999999999 is invalid: must be a number <= "
                     "2147483647", id="huge-lifetime"),
        pytest.param({"EDGE_PROPAGATION_BUDGET": "99999999999999999999"},
                     "EDGE_PROPAGATION_BUDGET=99999999999999999999 is invalid: must be a number "
                     "<= 2147483647", id="huge-budget"),
        pytest.param({"EDGE_REDIS_RETRY_INTERVAL": "1e30"},
                     "EDGE_REDIS_RETRY_INTERVAL=1e+30 is invalid: must be a number <= 2147483647",
                     id="huge-seconds"),
    ],
)
def test_bad_values_name_variable_and_value(env: dict[str, str], message: str) -> None:
    """A bad value raises SettingsError naming the variable and the value."""
    with pytest.raises(SettingsError) as caught:
        EdgeSettings.from_env(env)

    assert message in str(caught.value)


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://:hunter2@h:6379/abc", "names database 'abc'"),
    ("redis://u:hunter2@h:x/0", "has no valid port"),
    ("redis://:hunter2@[::1/0", "cannot be read as a URL"),
    ("redis://127.0.0.1:6379/x?password=hunter2", "names database 'x'"),
    ("redis://:hunter2@127.0.0.1:6379/0?db=x", "refused by redis-py: Invalid value for 'db'"),
    ("redis://:hunter2@h:6379/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    ("redis://:hunter2@h:6379/0?ssl_cert_reqs=none", "unexpected keyword argument"),
])
def test_bad_redis_url_is_shown_without_its_password(url: str, problem: str) -> None:
    """The error names REDIS_URL and its problem, with the password (user part or the
    password parameter redis-py also reads) masked: start-up errors end up in logs. A URL
    urlsplit cannot read is a settings error too, not a traceback."""
    with pytest.raises(SettingsError) as caught:
        EdgeSettings.from_env({"REDIS_URL": url})

    assert "REDIS_URL=" in str(caught.value) and problem in str(caught.value)
    assert "***" in str(caught.value) and "hunter2" not in str(caught.value)


def test_empty_value_means_default() -> None:
    """An empty variable counts as unset."""
    assert EdgeSettings.from_env({"EDGE_PORT": "  "}).port == 8080


def test_settings_table_lists_every_variable_with_its_default() -> None:
    """settings_table() has one markdown row per option, default included."""
    table = settings_table()
    rows = table.strip().splitlines()

    assert rows[0] == "| variable | default | meaning |"
    assert len(rows) == 2 + len(OPTIONS)
    assert "| `EDGE_PROPAGATION_BUDGET` | `1800` |" in table
    assert "| `EDGE_INSTANT` | `false` |" in table
    assert "| `EDGE_REFRESH_INTERVAL` | `30` |" in table
    assert "| `EDGE_ASSETS_DIR` | `var/assets` |" in table
