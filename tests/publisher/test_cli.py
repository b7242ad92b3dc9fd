"""The publisher CLI end to end: apply, publish, rollback, republish, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from edge import keyspace
from edge.http import gunzip
from publisher.cli import main
from publisher.service import build_service
from publisher.settings import PublisherSettings, SettingsError


def stored_json(client: redis.Redis, key: str) -> bytes | None:
    """The JSON of a version hash in Redis: its gzip bytes inflated (Redis holds no JSON)."""
    packed = client.hget(key, keyspace.F_GZIP)
    return None if packed is None else gunzip(cast(bytes, packed))

EXAMPLE = Path(__file__).parents[2] / "examples" / "workspace.json"
WEB_KEY = "acmeWebsiteWriteKey0001"
SERVER_KEY = "acmeServerWriteKey00003"


@pytest.fixture
def env(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "db.sqlite"
    monkeypatch.setenv("PUBLISHER_DB", str(db))
    monkeypatch.setenv("REDIS_URL", redis_url)
    return db


def snapshot(client: redis.Redis) -> dict[bytes, Any]:
    """Every source's keys in the Redis database with their values (strings, hashes, sorted
    sets); not ``sc:loaded``, which says whether the database was loaded, not what it serves."""
    out: dict[bytes, Any] = {}
    for key in sorted(client.keys(keyspace.tag("*") + ":*")):
        kind = client.type(key)
        if kind == b"string":
            out[key] = client.get(key)
        elif kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1)
    return out


def example(tmp_path: Path, change: Any = None) -> Path:
    doc = json.loads(EXAMPLE.read_text())
    if change is not None:
        change(doc)
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(doc))
    return path


def test_apply_publishes_every_source(env: Path, redis_client: redis.Redis,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Applying the example workspace publishes version 1 of each of its three sources."""
    assert main(["apply", str(EXAMPLE)]) == 0

    out = capsys.readouterr().out
    assert out.count("v1 new version") == 3
    for key in (WEB_KEY, SERVER_KEY, "acmeIosWriteKey00000002"):
        assert keyspace.decode_pointer(redis_client.get(keyspace.current_key(key)))[0] == 1


def test_apply_twice_changes_nothing(env: Path, redis_client: redis.Redis,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A second apply of the same file makes no version and no revision."""
    main(["apply", str(EXAMPLE)])
    before = snapshot(redis_client)
    capsys.readouterr()

    assert main(["apply", str(EXAMPLE)]) == 0

    out = capsys.readouterr().out
    assert out.count("unchanged (revision 1,") == 3
    assert snapshot(redis_client) == before


def test_bundle_never_carries_secrets_or_cloud_settings(env: Path,
                                                        redis_client: redis.Redis) -> None:
    """No cloud-mode or catalog-secret value of the example reaches any published bundle."""
    main(["apply", str(EXAMPLE)])

    doc = json.loads(EXAMPLE.read_text())
    cloud_values = [v for s in doc["sources"] for d in s["destinations"]
                    if d["connection_mode"] == "CLOUD" for v in d["settings"].values()]
    for key in (WEB_KEY, SERVER_KEY, "acmeIosWriteKey00000002"):
        body = stored_json(redis_client, keyspace.version_key(key, 1))
        assert body is not None
        assert b"SECRET" not in body
        for value in cloud_values:
            assert json.dumps(value).encode() not in body


def test_change_rollback_and_republish_after_flush(env: Path, tmp_path: Path,
                                                   redis_client: redis.Redis,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A change makes v2; rollback serves v1's bytes as v3; FLUSHALL + republish restores
    every byte."""
    main(["apply", str(EXAMPLE)])
    v1 = redis_client.hgetall(keyspace.version_key(WEB_KEY, 1))

    def disable_braze(doc: dict[str, Any]) -> None:
        doc["sources"][0]["destinations"][1]["enabled"] = False

    assert main(["apply", str(example(tmp_path, disable_braze))]) == 0
    v2 = stored_json(redis_client, keyspace.version_key(WEB_KEY, 2))
    assert v2 is not None and b"Appboy" not in v2

    assert main(["rollback", "acme/website", "1"]) == 0
    assert keyspace.decode_pointer(redis_client.get(keyspace.current_key(WEB_KEY)))[0] == 3
    before = snapshot(redis_client)

    redis_client.flushall()
    assert main(["republish", "--all"]) == 0

    v3 = redis_client.hgetall(keyspace.version_key(WEB_KEY, 3))
    assert {k: v for k, v in v3.items() if k not in (b"version", b"published_at")} == {
        k: v for k, v in v1.items() if k not in (b"version", b"published_at")}
    restored = snapshot(redis_client)
    for key, value in before.items():
        if b":current" in key or b":v:3" in key:
            assert restored[key] == value


def test_redis_holds_no_json_field(env: Path, redis_client: redis.Redis) -> None:
    """A version hash holds what edges read (``keyspace.FIELDS``), not the JSON: readers
    inflate the gzip bytes."""
    main(["apply", str(EXAMPLE)])
    fields = set(redis_client.hkeys(keyspace.version_key(WEB_KEY, 1)))
    assert fields == {f.encode() for f in keyspace.FIELDS}
    assert b"json" not in fields


def test_redis_keeps_fewer_versions_than_sqlite_and_rollback_reads_sqlite(
        env: Path, tmp_path: Path, redis_client: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis keeps PUBLISHER_REDIS_KEEP_VERSIONS versions, SQLite PUBLISHER_KEEP_VERSIONS; a
    rollback to a version only SQLite still holds serves that version's bytes."""
    monkeypatch.setenv("PUBLISHER_KEEP_VERSIONS", "10")
    monkeypatch.setenv("PUBLISHER_REDIS_KEEP_VERSIONS", "2")
    main(["apply", str(EXAMPLE)])
    first = stored_json(redis_client, keyspace.version_key(WEB_KEY, 1))
    for n in range(2, 5):  # versions 2, 3, 4: different api hosts
        def rename(doc: dict[str, Any], n: int = n) -> None:
            doc["sources"][0]["destinations"][1]["enabled"] = n % 2 == 1
        monkeypatch.setenv("PUBLISHER_API_HOST", f"events{n}.example.com/v1")
        assert main(["apply", str(example(tmp_path, rename))]) == 0
    assert keyspace.decode_pointer(redis_client.get(keyspace.current_key(WEB_KEY)))[0] == 4
    assert redis_client.zrange(keyspace.versions_key(WEB_KEY), 0, -1) == [b"3", b"4"]
    assert not redis_client.exists(keyspace.version_key(WEB_KEY, 1))
    service = build_service(PublisherSettings.from_env(), with_redis=False)
    source = service.store.get_source_by_write_key(WEB_KEY)
    assert source is not None
    assert [b.version for b in service.store.list_bundles(source.id)] == [1, 2, 3, 4]

    monkeypatch.delenv("PUBLISHER_API_HOST")
    assert main(["rollback", "acme/website", "1"]) == 0

    assert keyspace.decode_pointer(redis_client.get(keyspace.current_key(WEB_KEY)))[0] == 5
    assert first is not None
    assert stored_json(redis_client, keyspace.version_key(WEB_KEY, 5)) == first
    assert redis_client.zrange(keyspace.versions_key(WEB_KEY), 0, -1) == [b"4", b"5"]


def test_redis_keep_versions_is_at_least_two(env: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PUBLISHER_REDIS_KEEP_VERSIONS", "1")
    assert main(["apply", str(EXAMPLE)]) != 0
    assert "PUBLISHER_REDIS_KEEP_VERSIONS must be >= 2" in capsys.readouterr().err


def test_publish_of_unchanged_source_makes_no_version(env: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`publish` on an unchanged source reports the current version as unchanged."""
    main(["apply", str(EXAMPLE)])
    capsys.readouterr()

    assert main(["publish", WEB_KEY]) == 0

    assert "v1 unchanged" in capsys.readouterr().out


def test_publish_all_recompiles_every_source_after_a_compile_setting_changed(
        env: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A new PUBLISHER_API_HOST reaches the published bundles with `publish --all`: every
    source compiled again, a new version of each that changed; a source rolled back is left
    on the version it serves, and said so; a second run changes nothing."""
    main(["apply", str(EXAMPLE)])
    with_braze = stored_json(redis_client, keyspace.version_key(WEB_KEY, 1))
    main(["apply", str(example(Path(env).parent, lambda doc: doc["sources"][0][
        "destinations"][1].update(enabled=False)))])
    assert main(["rollback", WEB_KEY, "1"]) == 0
    monkeypatch.setenv("PUBLISHER_API_HOST", "events.example.com/v1")
    capsys.readouterr()

    status = main(["publish", "--all"])
    out, err = capsys.readouterr()
    again = main(["publish", "--all"])

    assert status == 0 and again == 0
    assert "compiled 3 sources: 2 new versions" in out
    assert f"{WEB_KEY} (website): rolled back to v1, left as it is" in err
    for key in (SERVER_KEY, "acmeIosWriteKey00000002"):
        version, _ = keyspace.decode_pointer(redis_client.get(keyspace.current_key(key)))
        body = stored_json(redis_client, keyspace.version_key(key, version))
        assert version == 2 and body is not None and b"events.example.com/v1" in body
    pointer = keyspace.decode_pointer(redis_client.get(keyspace.current_key(WEB_KEY)))
    assert pointer[0] == 3  # the rollback: version 1's bytes as version 3
    assert stored_json(redis_client, keyspace.version_key(WEB_KEY, 3)) == with_braze
    assert "compiled 3 sources: 0 new versions" in capsys.readouterr().out


def test_publish_all_with_redis_down_is_pending(env: Path, monkeypatch: pytest.MonkeyPatch,
                                                redis_client: redis.Redis,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`publish --all` with Redis unreachable commits the new versions, exits 1 naming them,
    and leaves them pending for serve's retry or `republish --all`."""
    main(["apply", str(EXAMPLE)])
    good = redis_client.connection_pool.connection_kwargs
    monkeypatch.setenv("PUBLISHER_API_HOST", "events.example.com/v1")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    capsys.readouterr()

    assert main(["publish", "--all"]) == 1
    out, err = capsys.readouterr()
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{good['port']}/0")
    assert main(["republish", "--all"]) == 0

    assert "3 new versions (3 not published yet or not compiled)" in out
    assert err.count("NOT PUBLISHED YET") == 3
    assert keyspace.decode_pointer(redis_client.get(keyspace.current_key(WEB_KEY)))[0] == 2


@pytest.mark.parametrize("argv", [["publish"], ["publish", "--all", WEB_KEY]])
def test_publish_needs_a_source_or_all(env: Path, argv: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`publish` takes a SOURCE or --all, not neither nor both (checked before the database
    is opened: no file is left behind)."""
    assert main(argv) == 2
    assert "publish needs a SOURCE or --all" in capsys.readouterr().err
    assert not env.exists()


def test_show_and_diff(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`show` reports the version and visible-everywhere time; `diff` says nothing changed."""
    main(["apply", str(EXAMPLE)])
    capsys.readouterr()

    assert main(["show", "acme/website"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["write_key"] == WEB_KEY
    assert shown["visible_everywhere_by"] >= shown["published_at"]

    assert main(["diff", "acme/website"]) == 0
    assert "no changes" in capsys.readouterr().out


def _set(path: list[Any], value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return change


WEB_DEST = ["sources", 0, "destinations"]


@pytest.mark.parametrize(("change", "needle"), [
    pytest.param(_set([*WEB_DEST, 0, "destination"], "no-such-destination"),
                 "unknown catalog destination 'no-such-destination'", id="unknown-catalog-name"),
    pytest.param(_set([*WEB_DEST, 0, "settings", "trackAllPages"], "yes"),
                 "setting 'trackAllPages' of Amplitude", id="wrong-setting-type"),
    pytest.param(_set([*WEB_DEST, 0, "settings", "noSuchSetting"], 1),
                 "unknown setting 'noSuchSetting'", id="unknown-setting"),
    pytest.param(_set([*WEB_DEST, 0, "settings"], {}),
                 "required setting 'apiKey'", id="missing-required-setting"),
    pytest.param(_set([*WEB_DEST, 0, "enabled"], "true"),
                 "enabled must be a boolean", id="enabled-not-boolean"),
    pytest.param(_set([*WEB_DEST, 0, "connection_mode"], "EDGE"),
                 "connection_mode must be CLOUD or DEVICE", id="bad-mode"),
    pytest.param(_set([*WEB_DEST, 2, "connection_mode"], "DEVICE"),
                 "one_device_instance", id="second-device-instance"),
    pytest.param(_set(["sources", 2, "destinations", 0, "connection_mode"], "DEVICE"),
                 "no_device_mode_on_server", id="device-on-server"),
    pytest.param(_set(["sources", 0, "type"], "website"), "type must be one of",
                 id="bad-source-type"),
    pytest.param(_set(["sources", 0, "slug"], "../etc"), "source slug", id="hostile-slug"),
    pytest.param(_set(["sources", 0, "surprise"], 1), "unknown field 'surprise'",
                 id="unknown-field"),
    pytest.param(_set(["sources"], {"a": 1}), "sources must be an array", id="sources-object"),
    pytest.param(_set([*WEB_DEST, 1, "filters", 0, "if"], 'uppercase(event) = "X"'),
                 "uses uppercase(), which device-mode filters cannot", id="browser-cannot-run"),
    pytest.param(_set([*WEB_DEST, 1, "filters", 0, "if"], 'event = "unterminated'),
                 "unterminated string", id="fql-syntax"),
    pytest.param(_set([*WEB_DEST, 1, "filters", 0, "id"], "../x/y"),
                 "filter.id '../x/y' must be 1-100 letters", id="filter-id-not-a-name"),
    pytest.param(_set(["sources", 0, "name"], "Acme\u0000website"),
                 "sources[0].name must not contain control characters, got U+0000",
                 id="control-character-in-source-name"),
    pytest.param(_set([*WEB_DEST, 0, "display_name"], False),
                 "display_name must be a string, got boolean", id="json-type-names"),
])
def test_bad_workspace_file_is_refused_and_writes_nothing(
    env: Path, tmp_path: Path, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str],
    change: Any, needle: str,
) -> None:
    """A bad file exits 2 with an error naming the problem, and neither SQLite nor Redis change."""
    bad = example(tmp_path, change)

    assert main(["apply", str(bad)]) == 2

    assert needle in capsys.readouterr().err
    assert snapshot(redis_client) == {}
    assert main(["sources"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(("content", "needle"), [
    pytest.param(b'{"workspace": {"slug": "acme"}, "sources": [', "not valid JSON",
                 id="truncated"),
    pytest.param(b"\xff\xfe garbage", "not valid JSON", id="not-utf8"),
    pytest.param(b"[]", "workspace file must be an object", id="array"),
    pytest.param(b"{}", "workspace must be an object", id="no-workspace"),
    pytest.param(b'{"workspace": {"slug": "acme", "slug": "other"}, "sources": []}',
                 "workspace file names the key \"slug\" twice in one object",
                 id="repeated-key"),
])
def test_malformed_file_exits_2(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                content: bytes, needle: str) -> None:
    """Malformed JSON gets exit status 2 and a message saying what is wrong."""
    path = tmp_path / "bad.json"
    path.write_bytes(content)

    assert main(["apply", str(path)]) == 2

    assert needle in capsys.readouterr().err


def test_oversized_file_exits_2(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """A file over PUBLISHER_MAX_FILE_BYTES is refused before it is parsed."""
    monkeypatch.setenv("PUBLISHER_MAX_FILE_BYTES", "100")

    assert main(["apply", str(EXAMPLE)]) == 2

    assert "PUBLISHER_MAX_FILE_BYTES" in capsys.readouterr().err


def test_second_source_failing_rolls_back_the_first(env: Path, tmp_path: Path,
                                                    redis_client: redis.Redis,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Apply is all-or-nothing: an error in the last source leaves the first unwritten."""
    bad = example(tmp_path, _set(["sources", 2, "destinations", 0, "destination"], "nope"))

    assert main(["apply", str(bad)]) == 2

    assert "source 'backend'" in capsys.readouterr().err
    assert snapshot(redis_client) == {}


def test_bad_setting_value_exits_2(env: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A bad environment value stops the CLI with a message naming the variable."""
    monkeypatch.setenv("PUBLISHER_KEEP_VERSIONS", "many")

    assert main(["show", "acme/website"]) == 2

    assert "PUBLISHER_KEEP_VERSIONS" in capsys.readouterr().err


def test_redis_down_keeps_change_pending(env: Path, monkeypatch: pytest.MonkeyPatch,
                                         redis_client: redis.Redis,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """With Redis unreachable, apply commits to SQLite, exits 1, and republish publishes later."""
    good_url = redis_client.connection_pool.connection_kwargs
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")

    assert main(["apply", str(EXAMPLE)]) == 1
    assert "NOT PUBLISHED YET" in capsys.readouterr().err

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{good_url['port']}/0")
    assert main(["republish", "--all"]) == 0
    assert redis_client.get(keyspace.current_key(WEB_KEY)) is not None


def test_republish_publishes_sources_never_published(env: Path, redis_client: redis.Redis,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Sources that SQLite holds without any bundle (e.g. imported) are compiled and published."""
    from publisher.core.model import Instance
    from publisher.store import Store

    with Store.open(str(env)) as store:
        ws = store.create_workspace("imported", "Imported")
        for n in range(3):
            src = store.create_source(ws.id, f"site-{n}", f"Site {n}", "web",
                                      write_key=f"importedWriteKey{n:04d}")
            store.replace_instances(src.id, [Instance(
                id="amplitude", catalog_slug="amplitude", display_name="Amplitude",
                connection_mode="DEVICE", enabled=True, settings={"apiKey": f"key-{n}"})])

    assert main(["republish", "--all"]) == 0

    assert "republished 3 of 3 sources" in capsys.readouterr().out
    for n in range(3):
        pointer = redis_client.get(keyspace.current_key(f"importedWriteKey{n:04d}"))
        assert keyspace.decode_pointer(pointer)[0] == 1
        body = stored_json(redis_client, keyspace.version_key(f"importedWriteKey{n:04d}", 1))
        assert body is not None and f"key-{n}".encode() in body


def test_a_pipe_without_writer_is_empty_not_a_hang(env: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """apply on a named pipe nobody writes to reads it as empty (exit 2) instead of waiting
    forever for a writer."""
    fifo = tmp_path / "ws.json"
    os.mkfifo(fifo)

    assert main(["apply", str(fifo)]) == 2

    assert "zero-length" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [
    pytest.param(["show", "acme/\udcff"], "is not valid UTF-8", id="undecodable-argument"),
    pytest.param(["token", "create", "acme", "--scope", "read", "--name", "\udcff"],
                 "is not valid UTF-8", id="undecodable-option"),
    pytest.param(["token", "create", "acme", "--scope", "read", "--name", "x" * 101],
                 "token name is 101 characters; the limit is 100", id="long-token-name"),
    pytest.param(["token", "create", "acme", "--scope", "read", "--name", "ci\nbot"],
                 "token name must not contain control characters", id="newline-in-token-name"),
    pytest.param(["rollback", "acme/website", "9223372036854775808"],
                 "a version is a whole number from 1", id="version-past-sqlite-integer"),
    pytest.param(["rollback", "acme/website", "１"], "a version is a whole number from 1",
                 id="version-in-other-digits"),
])
def test_hostile_arguments_exit_2(env: Path, capsys: pytest.CaptureFixture[str],
                                  argv: list[str], needle: str) -> None:
    """Arguments that cannot be names or versions exit 2 naming the problem (no traceback;
    argparse itself exits for a bad version)."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code  # type: ignore[assignment]

    assert status == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [
    pytest.param(["republish"], "republish needs --all", id="republish-without-all"),
    pytest.param(["workspace", "create"], "workspace create needs a SLUG", id="create-no-slug"),
    pytest.param(["workspace", "list", "acme"], "workspace list takes no SLUG",
                 id="list-with-slug"),
    pytest.param(["workspace", "list", "--name", "Acme"], "workspace list takes no SLUG or "
                 "--name", id="list-with-name"),
])
def test_arguments_an_action_does_not_take_exit_2(env: Path, capsys: pytest.CaptureFixture[str],
                                                  argv: list[str], needle: str) -> None:
    """A missing or extra argument argparse cannot see exits 2 naming it, before the database
    file is created."""
    assert main(argv) == 2

    assert needle in capsys.readouterr().err
    assert not env.exists()


@pytest.mark.parametrize(("variable", "value", "needle"), [
    pytest.param("PUBLISHER_DB", "/nonexistent/dir/x.db", "cannot open the configuration "
                 "database", id="db-in-a-missing-directory"),
    pytest.param("PUBLISHER_DB", ":memory:", "PUBLISHER_DB must name a file, got ':memory:'",
                 id="db-in-memory"),
    pytest.param("REDIS_URL", "redis://127.0.0.1:6379/abc", "REDIS_URL names database 'abc'",
                 id="redis-database-not-a-number"),
    pytest.param("REDIS_URL", "redis://:secret@127.0.0.1:port/1", "REDIS_URL has no valid port",
                 id="redis-port-not-a-number"),
    pytest.param("REDIS_URL", "redis://:secret@[::1/0", "REDIS_URL cannot be read as a URL",
                 id="redis-url-unreadable"),
    pytest.param("REDIS_URL", "redis://127.0.0.1:6379/x?password=secret",
                 "REDIS_URL names database 'x'", id="redis-password-parameter"),
    pytest.param("REDIS_URL", "redis://:secret@127.0.0.1:6379/0?ssl_cert_reqs=none",
                 "REDIS_URL is refused by redis-py", id="redis-option-unknown"),
    pytest.param("REDIS_URL", "redis://:secret@127.0.0.1:6379/0?db=x",
                 "REDIS_URL is refused by redis-py", id="redis-option-unreadable"),
])
def test_unusable_settings_exit_2(env: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str], variable: str, value: str,
                                  needle: str) -> None:
    """A database that cannot be opened or would not keep what is written, or a Redis URL
    redis-py would read as another one, stops the CLI with exit 2 naming it; a password in the
    URL is not printed."""
    monkeypatch.setenv(variable, value)

    assert main(["sources"]) == 2

    err = capsys.readouterr().err
    assert needle in err and "secret" not in err


def test_redis_error_message_masks_the_password(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A Redis error a command lets through exits 1 naming the Redis URL without its
    password."""
    def fail(*_: Any) -> int:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setenv("PUBLISHER_DB", str(tmp_path / "db.sqlite"))
    monkeypatch.setattr("publisher.cli.cmd_sources", fail)

    status = main(["--redis-url", "redis://user:secret@127.0.0.1:6399/0", "sources"])

    err = capsys.readouterr().err
    assert status == 1
    assert "redis://user:***@127.0.0.1:6399/0" in err and "secret" not in err


@pytest.mark.parametrize(("option", "needle"), [
    pytest.param("--db", "PUBLISHER_DB must not be empty", id="db"),
    pytest.param("--redis-url", "REDIS_URL must start with redis://", id="redis-url"),
])
def test_empty_option_is_refused_not_ignored(env: Path, capsys: pytest.CaptureFixture[str],
                                             option: str, needle: str) -> None:
    """An empty --db or --redis-url exits 2 naming the setting; it does not fall back to the
    environment as if the option were not given."""
    assert main([option, "", "apply", str(EXAMPLE)]) == 2

    assert needle in capsys.readouterr().err
    assert not env.exists()


def test_sources_of_an_empty_workspace_name_is_refused(env: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """'sources ""' names no workspace: it is an unknown one (exit 2), not every workspace."""
    assert main(["apply", str(EXAMPLE)]) == 0
    capsys.readouterr()

    assert main(["sources", ""]) == 2


@pytest.mark.parametrize("variable", ["PUBLISHER_REDIS_TIMEOUT", "PUBLISHER_BODY_TIMEOUT"])
@pytest.mark.parametrize(("raw", "ok"), [("0.5", True), ("30", True), ("0", False),
                                         ("-1", False), ("soon", False), ("inf", False)])
def test_timeout_settings_take_positive_seconds(variable: str, raw: str, ok: bool) -> None:
    """The Redis command timeout and the request-body timeout are seconds > 0; anything else
    stops the start with a message naming the variable."""
    field = {"PUBLISHER_REDIS_TIMEOUT": "redis_timeout",
             "PUBLISHER_BODY_TIMEOUT": "body_timeout"}[variable]
    if ok:
        assert getattr(PublisherSettings.from_env({variable: raw}), field) == float(raw)
        return
    with pytest.raises(SettingsError, match=variable):
        PublisherSettings.from_env({variable: raw})


@pytest.mark.parametrize("variable", ["PUBLISHER_REDIS_TIMEOUT", "PUBLISHER_KEEP_VERSIONS",
                                      "PUBLISHER_MAX_FILE_BYTES"])
@pytest.mark.parametrize("raw", ["99999999999999999999", "2147483648"])
def test_numbers_above_the_maximum_exit_2(env: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], variable: str,
                                          raw: str) -> None:
    """A number above 2**31 - 1 stops the CLI with exit 2 naming the variable, before anything
    is written (it was a traceback at the first socket or file read, or every publish refused
    by Redis and reported as pending)."""
    monkeypatch.setenv(variable, raw)

    assert main(["apply", str(EXAMPLE)]) == 2

    assert f"{variable} must be <= 2147483647" in capsys.readouterr().err
    assert not env.exists()


@pytest.mark.parametrize(("raw", "needle"), [("0", "PUBLISHER_PORT must be >= 1"),
                                           ("65536", "PUBLISHER_PORT must be a TCP port")])
def test_port_outside_1_to_65535_is_refused(raw: str, needle: str) -> None:
    """PUBLISHER_PORT is a TCP port from 1: port 0 (which the OS would pick, and `serve`
    would never say) is refused like any other port out of range."""
    with pytest.raises(SettingsError, match=needle):
        PublisherSettings.from_env({"PUBLISHER_PORT": raw})


@pytest.mark.parametrize(("raw", "secret"), [("", ""), ("s3cret", "s3cret"), (" ", None),
                                           ("\t\n", None)])
def test_webhook_secret_of_whitespace_is_refused(raw: str, secret: str | None) -> None:
    """An empty PUBLISHER_WEBHOOK_SECRET disables the webhook; one of whitespace only, which
    would enable it with a key anyone can guess, stops the start naming the variable."""
    env = {"PUBLISHER_WEBHOOK_SECRET": raw}
    if secret is not None:
        assert PublisherSettings.from_env(env).webhook_secret == secret
        return
    with pytest.raises(SettingsError, match="PUBLISHER_WEBHOOK_SECRET is only whitespace"):
        PublisherSettings.from_env(env)


def test_redis_timeout_reaches_the_client(tmp_path: Path) -> None:
    """PUBLISHER_REDIS_TIMEOUT is the socket timeout of the publisher's Redis client (it was a
    fixed 5 s); connecting waits at most 2 s, or the timeout if shorter."""
    for timeout, connect in ((0.75, 0.75), (9.0, 2.0)):
        settings = PublisherSettings(db_path=str(tmp_path / "t.db"), redis_timeout=timeout)
        service = build_service(settings)
        try:
            assert service.publisher is not None
            kwargs = service.publisher.client.connection_pool.connection_kwargs
            assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (timeout,
                                                                                     connect)
        finally:
            service.store.close()
