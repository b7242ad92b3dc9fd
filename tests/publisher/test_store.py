"""The SQLite store: CRUD, write keys, replace_instances, bundles and transactions."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from publisher.core.bundle import make_bundle
from publisher.core.model import Filter, Instance, Source, Workspace
from publisher.core.specs import new_instance_id, slugify
from publisher.errors import AlreadyExists, InvalidArgument, NotFound
from publisher.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(str(tmp_path / "config.db")) as s:
        yield s


@pytest.fixture
def source(store: Store) -> Source:
    ws = store.create_workspace("acme", "Acme")
    return store.create_source(ws.id, "web", "Website", "web")


def inst(id: str, name: str | None = None, **kw: Any) -> Instance:
    fields: dict[str, Any] = {
        "catalog_slug": "amplitude",
        "display_name": name or id.title(),
        "connection_mode": "CLOUD",
        "enabled": True,
        "settings": {"apiKey": "k"},
    }
    fields.update(kw)
    return Instance(id=id, **fields)


def flt(id: str, **kw: Any) -> Filter:
    fields: dict[str, Any] = {"if_": "type = 'track'", "actions": ({"type": "drop_event"},),
                              "title": f"filter {id}"}
    fields.update(kw)
    return Filter(id=id, **fields)


def test_open_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    """A file database is opened in WAL mode with foreign keys enforced."""
    path = tmp_path / "wal.db"
    with Store.open(str(path)):
        conn = sqlite3.connect(path)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.close()
    with Store.open(":memory:") as mem:
        fk = mem._conn.execute("PRAGMA foreign_keys").fetchone()[0]

    assert mode == "wal"
    assert fk == 1


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("missing-dir/config.db", id="missing-directory"),
        pytest.param("not-a-db.db", id="not-a-database"),
    ],
)
def test_open_bad_path_is_a_clear_error(tmp_path: Path, name: str) -> None:
    """A path that cannot hold the database is refused with an error naming the path."""
    (tmp_path / "not-a-db.db").write_bytes(b"this is not sqlite" * 100)
    path = str(tmp_path / name)

    with pytest.raises(InvalidArgument, match=re.escape(repr(path))) as info:
        Store.open(path)
    assert info.value.code == "database_unavailable"


def test_reopen_keeps_data(tmp_path: Path) -> None:
    """Data written through one Store is there after closing and reopening the file."""
    path = str(tmp_path / "keep.db")
    with Store.open(path) as first:
        ws = first.create_workspace("acme", "Acme")
        src = first.create_source(ws.id, "web", "Web", "web")

    with Store.open(path) as second:
        assert second.get_source_by_write_key(src.write_key) == src


def test_workspace_crud(store: Store) -> None:
    """Workspaces are created, found by slug and listed; unknown slugs give None."""
    b = store.create_workspace("beta", "Beta")
    a = store.create_workspace("alpha", "  Alpha  ")

    assert a == Workspace(id=a.id, slug="alpha", name="Alpha")
    assert store.get_workspace("beta") == b
    assert store.get_workspace("nope") is None
    assert store.list_workspaces() == [a, b]


@pytest.mark.parametrize(
    ("slug", "name", "error", "message"),
    [
        pytest.param("acme", "Again", AlreadyExists, "workspace 'acme' already exists",
                     id="duplicate-slug"),
        pytest.param("has space", "X", InvalidArgument, "workspace slug 'has space'",
                     id="bad-slug"),
        pytest.param("", "X", InvalidArgument, "workspace slug ''", id="empty-slug"),
        pytest.param("ok", "   ", InvalidArgument, "workspace name must be a non-empty",
                     id="blank-name"),
    ],
)
def test_create_workspace_refuses_bad_input(
    store: Store, slug: str, name: str, error: type[Exception], message: str
) -> None:
    """Bad or duplicate workspaces are refused with an error naming the value."""
    store.create_workspace("acme", "Acme")

    with pytest.raises(error, match=re.escape(message)):
        store.create_workspace(slug, name)
    assert [w.slug for w in store.list_workspaces()] == ["acme"]


def test_generated_write_keys_are_url_safe_and_unique(store: Store) -> None:
    """Generated write keys are 32 URL-safe characters and differ between sources."""
    ws = store.create_workspace("acme", "Acme")

    keys = [store.create_source(ws.id, f"s{n}", f"S{n}", "web").write_key for n in range(50)]

    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", k) for k in keys)
    assert len(set(keys)) == 50


def test_source_crud(store: Store) -> None:
    """Sources are found by workspace+slug, by write key, by id, listed and deleted."""
    ws = store.create_workspace("acme", "Acme")
    other = store.create_workspace("other", "Other")
    web = store.create_source(ws.id, "web", "Web", "web")
    ios = store.create_source(ws.id, "ios", "iOS", "ios", write_key="fixed-ios-key")
    elsewhere = store.create_source(other.id, "web", "Web", "web")

    assert ios.write_key == "fixed-ios-key"
    assert store.get_source(ws.id, "web") == web
    assert store.get_source(other.id, "web") == elsewhere
    assert store.get_source(ws.id, "nope") is None
    assert store.get_source_by_write_key("fixed-ios-key") == ios
    assert store.get_source_by_write_key("unknown") is None
    assert store.list_sources(ws.id) == [ios, web]
    assert store.all_sources() == [web, ios, elsewhere]

    store.delete_source(web.id)

    assert store.get_source(ws.id, "web") is None
    assert store.all_sources() == [ios, elsewhere]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        pytest.param(("web", "W", "web"), {}, AlreadyExists, "source 'web' already exists",
                     id="duplicate-slug"),
        pytest.param(("new", "N", "web"), {"write_key": "taken-key"}, AlreadyExists,
                     "write key 'taken-key' is already used", id="duplicate-write-key"),
        pytest.param(("new", "N", "desktop"), {}, InvalidArgument,
                     "source type 'desktop' is not one of web, ios, android, server, project",
                     id="unknown-type"),
        pytest.param(("new", "N", "web"), {"write_key": "a/b"}, InvalidArgument,
                     "write key 'a/b' is not URL-safe", id="unsafe-write-key"),
        pytest.param(("new/x", "N", "web"), {}, InvalidArgument, "source slug 'new/x'",
                     id="bad-slug"),
    ],
)
def test_create_source_refuses_bad_input(
    store: Store, args: tuple[str, str, str], kwargs: dict[str, str],
    error: type[Exception], message: str,
) -> None:
    """Bad or duplicate sources are refused with an error naming the value."""
    ws = store.create_workspace("acme", "Acme")
    store.create_source(ws.id, "web", "Web", "web", write_key="taken-key")

    with pytest.raises(error, match=re.escape(message)):
        store.create_source(ws.id, *args, **kwargs)
    assert [s.slug for s in store.all_sources()] == ["web"]


def test_create_source_in_unknown_workspace(store: Store) -> None:
    """A source for a workspace that does not exist is NotFound."""
    with pytest.raises(NotFound, match="workspace 999 not found"):
        store.create_source(999, "web", "Web", "web")


def test_revision_bumps_and_is_set(store: Store, source: Source) -> None:
    """bump_revision counts up by one; set_revision jumps forward but never back."""
    assert store.bump_revision(source.id) == 1
    assert store.bump_revision(source.id) == 2
    assert store.set_revision(source.id, 40) == 40
    assert store.bump_revision(source.id) == 41

    with pytest.raises(InvalidArgument, match="revision 3 is older than") as info:
        store.set_revision(source.id, 3)
    assert info.value.code == "stale_revision"
    found = store.get_source_by_id(source.id)
    assert found is not None and found.revision == 41


def test_bump_revision_of_unknown_source(store: Store) -> None:
    """Bumping a missing source's revision is NotFound, not a crash."""
    with pytest.raises(NotFound, match="source 12345 not found"):
        store.bump_revision(12345)


def test_replace_instances_round_trips(store: Store, source: Source) -> None:
    """Instances and their ordered filters come back exactly as written."""
    desired = [
        inst("amp", "Amplitude", connection_mode="DEVICE",
             settings={"apiKey": "x", "nested": {"a": [1, 2]}},
             filters=(flt("f2", description="second"), flt("f1", enabled=False))),
        inst("amp-eu", "Amplitude EU", enabled=False),
    ]

    with freeze_time("2024-05-06T07:08:09Z"):
        store.replace_instances(source.id, desired)

    got = store.list_instances(source.id)
    stamp = "2024-05-06T07:08:09Z"
    assert got == [replace(i, created_at=stamp, updated_at=stamp) for i in desired]


def test_instances_of_reads_many_sources_at_once(store: Store, source: Source) -> None:
    """Each source gets its own instances in creation order; empty and unknown ids get []."""
    other = store.create_source(source.workspace_id, "app", "App", "web")
    empty = store.create_source(source.workspace_id, "empty", "Empty", "web")
    mine = [inst("amp", "Amplitude", filters=(flt("f2"), flt("f1", enabled=False))),
            inst("amp-eu", "Amplitude EU", enabled=False, settings={"n": {"a": [1]}})]
    theirs = [inst("mp", "Mixpanel", catalog_slug="mixpanel", filters=(flt("f3"),))]
    with freeze_time("2024-05-06T07:08:09Z"):
        store.replace_instances(other.id, theirs)
        store.replace_instances(source.id, mine)

    got = store.instances_of([other.id, source.id, empty.id, 999])

    stamp = "2024-05-06T07:08:09Z"
    assert got == {
        other.id: [replace(i, created_at=stamp, updated_at=stamp) for i in theirs],
        source.id: [replace(i, created_at=stamp, updated_at=stamp) for i in mine],
        empty.id: [],
        999: [],
    }
    assert got[source.id] == store.list_instances(source.id)


def test_replace_instances_matches_by_id(store: Store, source: Source) -> None:
    """Unchanged ids keep both times, changed ids keep created_at, missing ids are deleted."""
    with freeze_time("2024-01-01T00:00:00Z"):
        store.replace_instances(
            source.id, [inst("a", filters=(flt("f1"), flt("f2"))), inst("b"), inst("c")]
        )

    with freeze_time("2024-02-02T00:00:00Z"):
        store.replace_instances(source.id, [
            inst("a", filters=(flt("f2"),)),          # filter f1 removed: a is unchanged
            inst("b", settings={"apiKey": "new"}),    # changed
            inst("d"),                                 # new; c is gone
        ])

    got = {i.id: i for i in store.list_instances(source.id)}
    assert sorted(got) == ["a", "b", "d"]
    assert (got["a"].created_at, got["a"].updated_at) == ("2024-01-01T00:00:00Z",) * 2
    assert [f.id for f in got["a"].filters] == ["f2"]
    assert (got["b"].created_at, got["b"].updated_at) == (
        "2024-01-01T00:00:00Z", "2024-02-02T00:00:00Z")
    assert got["b"].settings == {"apiKey": "new"}
    assert (got["d"].created_at, got["d"].updated_at) == ("2024-02-02T00:00:00Z",) * 2


def test_replace_instances_can_swap_display_names(store: Store, source: Source) -> None:
    """Two instances may exchange display names in one replace."""
    store.replace_instances(source.id, [inst("a", "First"), inst("b", "Second")])

    store.replace_instances(source.id, [inst("a", "Second"), inst("b", "First")])

    assert [(i.id, i.display_name) for i in store.list_instances(source.id)] == [
        ("a", "Second"), ("b", "First")]


def test_replace_instances_with_nothing_deletes_all(store: Store, source: Source) -> None:
    """An empty desired set removes every instance and its filters."""
    store.replace_instances(source.id, [inst("a", filters=(flt("f"),))])

    store.replace_instances(source.id, [])

    assert store.list_instances(source.id) == []
    assert store._conn.execute("SELECT COUNT(*) FROM filters").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("desired", "error", "message"),
    [
        pytest.param([inst("a", "Amp"), inst("b", "amp")], AlreadyExists,
                     "display name 'amp' is used by instances 'a' and 'b'",
                     id="display-name-case-insensitive"),
        pytest.param([inst("a"), inst("a", "Other")], InvalidArgument,
                     "destination instance id 'a' appears twice", id="duplicate-id"),
        pytest.param([inst("a b")], InvalidArgument, "instance id 'a b' is not URL-safe",
                     id="unsafe-id"),
        pytest.param([inst("a", connection_mode="HYBRID")], InvalidArgument,
                     "connection mode 'HYBRID' of instance 'a' must be one of CLOUD, DEVICE",
                     id="bad-mode"),
        pytest.param([inst("a", settings=["x"])], InvalidArgument,
                     "settings of instance 'a' must be a JSON object", id="settings-not-object"),
        pytest.param([inst("a", settings={"x": {1, 2}})], InvalidArgument,
                     "settings of instance 'a' is not JSON-serializable", id="settings-not-json"),
        pytest.param([inst("a", "  ")], InvalidArgument,
                     "display name of instance 'a' must be a non-empty", id="blank-name"),
        pytest.param([inst("a", filters=(flt("f"), flt("f")))], InvalidArgument,
                     "filter id 'f' appears twice on instance 'a'", id="duplicate-filter"),
    ],
)
def test_replace_instances_refuses_bad_sets(
    store: Store, source: Source, desired: list[Instance], error: type[Exception], message: str
) -> None:
    """A bad desired set is refused with a message naming the value, and nothing changes."""
    store.replace_instances(source.id, [inst("keep")])
    before = store.list_instances(source.id)

    with pytest.raises(error, match=re.escape(message)):
        store.replace_instances(source.id, desired)
    assert store.list_instances(source.id) == before


def test_replace_instances_of_unknown_source(store: Store) -> None:
    """Writing instances of a missing source is NotFound."""
    with pytest.raises(NotFound, match="source 77 not found"):
        store.replace_instances(77, [inst("a")])


@pytest.mark.parametrize(
    ("existing", "name", "expected"),
    [
        pytest.param([], "Google Analytics 4", "google-analytics-4", id="plain"),
        pytest.param(["amplitude"], "Amplitude", "amplitude-2", id="taken"),
        pytest.param(["amplitude", "amplitude-2"], "Amplitude", "amplitude-3", id="taken-twice"),
        pytest.param([], "Émile's  Café!", "emile-s-cafe", id="accents-and-punctuation"),
        pytest.param([], "日本", "destination", id="nothing-ascii"),
    ],
)
def test_new_instance_id(existing: list[str], name: str, expected: str) -> None:
    """New instance ids are URL-safe slugs of the display name, unique in the source."""
    assert new_instance_id(name, set(existing)) == expected


def test_slugify_bounds_length() -> None:
    """A very long display name gives a slug of at most 64 characters."""
    assert len(slugify("x" * 500)) == 64


def test_bundles_are_kept_with_their_bytes(store: Store, source: Source) -> None:
    """Recorded bundles come back byte for byte; latest and current follow publishes."""
    assert store.latest_bundle(source.id) is None
    assert store.current_bundle(source.id) is None
    bundles = [make_bundle(b'{"n":%d}' % n, version=n, revision=n, published_at=n)
               for n in (1, 2, 3)]

    for b in bundles:
        store.record_bundle(source.id, b)

    assert store.list_bundles(source.id) == bundles
    assert store.latest_bundle(source.id) == bundles[2]
    assert store.current_bundle(source.id) == bundles[2]
    assert store.get_bundle(source.id, 2) == bundles[1]
    assert store.get_bundle(source.id, 9) is None


def test_record_bundle_refuses_to_change_a_version(store: Store, source: Source) -> None:
    """A version number already holding other bytes is refused; the same bytes are a no-op."""
    first = make_bundle(b"one", version=1, revision=1, published_at=1)
    store.record_bundle(source.id, first)
    store.record_bundle(source.id, first)

    with pytest.raises(AlreadyExists, match=r"version 1 of source \d+ already holds"):
        store.record_bundle(source.id, make_bundle(b"two", version=1, revision=1,
                                                   published_at=1))
    assert store.list_bundles(source.id) == [first]


def test_record_bundles_keeps_many_at_once(store: Store, source: Source) -> None:
    """Bundles of several sources are kept and made current together, as one by one."""
    other = store.create_source(source.workspace_id, "app", "App", "web")
    a1, a2 = (make_bundle(b"a%d" % n, version=n, revision=n, published_at=n) for n in (1, 2))
    b1 = make_bundle(b"b1", version=1, revision=1, published_at=1)

    store.record_bundles([(source.id, a1), (other.id, b1), (source.id, a2), (source.id, a2)])

    assert store.list_bundles(source.id) == [a1, a2]
    assert store.current_bundle(source.id) == a2
    assert store.current_bundle(other.id) == b1
    assert store.sources_with_bundles([source.id, other.id, 999]) == {source.id, other.id}


@pytest.mark.parametrize(
    ("unknown", "error", "message"),
    [
        pytest.param(True, NotFound, "source 999 not found", id="unknown-source"),
        pytest.param(False, AlreadyExists, r"version 1 of source \d+ already holds",
                     id="changed-version"),
    ],
)
def test_record_bundles_writes_nothing_on_a_refusal(
    store: Store, source: Source, unknown: bool, error: type[Exception], message: str
) -> None:
    """One refused item leaves every source's bundles and current version as they were."""
    other = store.create_source(source.workspace_id, "app", "App", "web")
    first = make_bundle(b"first", version=1, revision=1, published_at=1)
    store.record_bundle(source.id, first)
    refused = make_bundle(b"other", version=1, revision=1, published_at=1)

    with pytest.raises(error, match=message):
        store.record_bundles([
            (other.id, make_bundle(b"fine", version=1, revision=1, published_at=1)),
            (999 if unknown else source.id, refused),
        ])

    assert store.list_bundles(source.id) == [first]
    assert store.list_bundles(other.id) == []
    assert store.sources_with_bundles([source.id, other.id]) == {source.id}


@pytest.mark.parametrize(
    ("current", "keep", "kept"),
    [
        pytest.param(6, 3, [4, 5, 6], id="keeps-newest"),
        pytest.param(2, 3, [2, 4, 5, 6], id="spares-current"),
        pytest.param(6, 10, [1, 2, 3, 4, 5, 6], id="fewer-than-keep"),
    ],
)
def test_prune_bundles(
    store: Store, source: Source, current: int, keep: int, kept: list[int]
) -> None:
    """Pruning keeps the newest bundles and the current one, deleting the rest."""
    for n in range(1, 7):
        store.record_bundle(source.id, make_bundle(b"%d" % n, version=n, revision=n,
                                                   published_at=n))
    # (a current version below the newest: kept from before rollbacks made new versions)
    store._conn.execute("UPDATE sources SET current_version = ? WHERE id = ?",
                        (current, source.id))

    deleted = store.prune_bundles(source.id, keep)

    assert [b.version for b in store.list_bundles(source.id)] == kept
    assert deleted == sorted(set(range(1, 7)) - set(kept))


def test_delete_source_cascades(store: Store, source: Source) -> None:
    """Deleting a source deletes its instances, filters and bundles."""
    store.replace_instances(source.id, [inst("a", filters=(flt("f"),))])
    store.record_bundle(source.id, make_bundle(b"x", version=1, revision=1, published_at=1))

    store.delete_source(source.id)

    counts = [store._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ("destinations", "filters", "bundles")]
    assert counts == [0, 0, 0]
    with pytest.raises(NotFound, match=f"source {source.id} not found"):
        store.delete_source(source.id)


def test_transaction_rolls_back_on_error(store: Store, source: Source) -> None:
    """An exception inside transaction() undoes every write made in it."""
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.replace_instances(source.id, [inst("a")])
        store.bump_revision(source.id)
        store.create_workspace("ghost", "Ghost")
        raise RuntimeError("boom")

    assert store.list_instances(source.id) == []
    found = store.get_source_by_id(source.id)
    assert found is not None and found.revision == 0
    assert store.get_workspace("ghost") is None


def test_transaction_commits_on_success(tmp_path: Path) -> None:
    """Writes made in a transaction are visible to another connection after it ends."""
    path = str(tmp_path / "c.db")
    with Store.open(path) as writer, Store.open(path) as reader:
        with writer.transaction():
            writer.create_workspace("acme", "Acme")
            assert reader.get_workspace("acme") is None  # not committed yet

        assert reader.get_workspace("acme") is not None


def test_nested_transaction_is_a_savepoint(store: Store) -> None:
    """A failing inner transaction undoes only its own writes; the outer one commits."""
    with store.transaction():
        store.create_workspace("outer", "Outer")
        with pytest.raises(AlreadyExists), store.transaction():
            store.create_workspace("inner", "Inner")
            store.create_workspace("outer", "Again")

    assert [w.slug for w in store.list_workspaces()] == ["outer"]


def test_transaction_serialises_threads(store: Store) -> None:
    """Concurrent read-modify-write transactions from threads lose no update."""
    ws = store.create_workspace("acme", "Acme")
    src = store.create_source(ws.id, "web", "Web", "web")

    def work() -> None:
        for _ in range(50):
            with store.transaction():
                found = store.get_source_by_id(src.id)
                assert found is not None
                store.set_revision(src.id, found.revision + 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    found = store.get_source_by_id(src.id)
    assert found is not None and found.revision == 200


def test_reads_do_not_wait_for_a_running_write(store: Store) -> None:
    """A read from another thread answers from the last commit while a write transaction is
    open (it may wait on Redis for PUBLISHER_REDIS_TIMEOUT): it neither waits for it nor sees
    its uncommitted rows. Inside the transaction, its own thread sees them."""
    store.create_workspace("acme", "Acme")
    inside, release = threading.Event(), threading.Event()
    seen_inside: list[bool] = []

    def write() -> None:
        with store.transaction():
            store.create_workspace("beta", "Beta")
            seen_inside.append(store.get_workspace("beta") is not None)
            inside.set()
            release.wait(10)

    writer = threading.Thread(target=write)
    writer.start()
    assert inside.wait(5)
    found: list[list[str]] = []
    reader = threading.Thread(target=lambda: found.append(
        [w.slug for w in store.list_workspaces()]))
    reader.start()
    reader.join(2)  # done by now unless it waits for the write
    answered_during_write = not reader.is_alive()
    release.set()
    writer.join(10)
    reader.join(10)

    assert answered_during_write and found == [["acme"]]
    assert seen_inside == [True]
    assert [w.slug for w in store.list_workspaces()] == ["acme", "beta"]


def test_tokens(store: Store) -> None:
    """Tokens are stored by hash, found by hash, and their scope is checked."""
    ws = store.create_workspace("acme", "Acme")

    token = store.create_token(ws.id, "ci", "hash-1", "write")

    assert store.find_token("hash-1") == token
    assert store.find_token("hash-2") is None
    with pytest.raises(AlreadyExists):
        store.create_token(ws.id, "again", "hash-1", "read")
    with pytest.raises(InvalidArgument, match="token scope 'admin' is not one of read, write"):
        store.create_token(ws.id, "x", "hash-3", "admin")


def test_webhook_events_are_recorded_once(store: Store, source: Source) -> None:
    """The first delivery of an event is recorded; a repeat is reported and not overwritten."""
    assert store.record_webhook_event("evt-1", source.id, 200, {"version": 3}) is True
    assert store.record_webhook_event("evt-1", source.id, 500, {"other": 1}) is False

    event = store.get_webhook_event("evt-1")
    assert event is not None
    assert (event.source_id, event.status, event.response) == (source.id, 200, {"version": 3})
    assert store.get_webhook_event("evt-2") is None
