"""The Sentinel settings of the edge and the publisher: each bad value stops the program with
a message naming the variable and what is wrong."""

from __future__ import annotations

import pytest

from edge.redis_url import parse_sentinels
from edge.settings import EdgeSettings, SettingsError
from publisher.settings import PublisherSettings
from publisher.settings import SettingsError as PublisherSettingsError


def test_addresses_are_parsed() -> None:
    assert parse_sentinels(" a:1, 10.0.0.2:26379 ,[::1]:5") == [
        ("a", 1), ("10.0.0.2", 26379), ("::1", 5)]
    assert parse_sentinels("") == []


@pytest.mark.parametrize(("raw", "problem"), [
    ("host", "'host' is not host:port"),
    (":26379", "':26379' is not host:port"),
    ("h:0", "'h:0' has no valid port"),
    ("h:x", "'h:x' has no valid port"),
    ("h:1,,h:2", "'' is not host:port"),
    ("h:1,h:1", "'h:1' is listed twice"),
])
def test_bad_addresses_name_the_entry(raw: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=f"EDGE_REDIS_SENTINELS=.*{problem}"):
        EdgeSettings.from_env({"EDGE_REDIS_SENTINELS": raw})
    with pytest.raises(PublisherSettingsError, match=f"PUBLISHER_REDIS_SENTINELS .*{problem}"):
        PublisherSettings.from_env({"PUBLISHER_REDIS_SENTINELS": raw})


def test_role_is_replica_or_primary() -> None:
    assert EdgeSettings.from_env({}).redis_role == "replica"
    with pytest.raises(SettingsError, match="EDGE_REDIS_ROLE='master' is invalid: must be "
                                            "replica or primary"):
        EdgeSettings.from_env({"EDGE_REDIS_ROLE": "master"})


def test_a_unix_socket_url_cannot_go_with_sentinels() -> None:
    env = {"REDIS_URL": "unix:///run/redis.sock", "EDGE_REDIS_SENTINELS": "h:1",
           "PUBLISHER_REDIS_SENTINELS": "h:1"}
    with pytest.raises(SettingsError, match=r"REDIS_URL=.*invalid with EDGE_REDIS_SENTINELS"):
        EdgeSettings.from_env(env)
    with pytest.raises(PublisherSettingsError, match="REDIS_URL is a unix:// URL"):
        PublisherSettings.from_env(env)
    assert EdgeSettings.from_env({"REDIS_URL": env["REDIS_URL"]}).redis_sentinels == ""


def test_publisher_sentinel_service_and_password() -> None:
    settings = PublisherSettings.from_env({"PUBLISHER_REDIS_SENTINELS": "h:1",
                                           "PUBLISHER_REDIS_SENTINEL_PASSWORD": "pw"})
    assert (settings.redis_sentinels, settings.redis_sentinel_service,
            settings.redis_sentinel_password) == ("h:1", "mymaster", "pw")
    with pytest.raises(PublisherSettingsError, match="PUBLISHER_REDIS_SENTINEL_SERVICE must not"):
        PublisherSettings.from_env({"PUBLISHER_REDIS_SENTINEL_SERVICE": " "})
    with pytest.raises(PublisherSettingsError, match="whitespace"):
        PublisherSettings.from_env({"PUBLISHER_REDIS_SENTINEL_PASSWORD": " pw"})
