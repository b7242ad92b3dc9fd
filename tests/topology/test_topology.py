"""The scaled-out deployment under writes and failures, on real processes (tests/topology/
topology.py): a publish reaches every edge; a primary killed mid-stream of writes loses none of
them; a replica restarted empty leaves its edge serving what it held until it has resynced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.topology.topology import Topology, Watch, kill, linked, start_topology, wait_until

pytestmark = pytest.mark.slow
WEBSITE = "acmeWebsiteWriteKey0001"  # the source set_amplitude_key writes


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[Topology]:
    yield from start_topology(tmp_path)


def served_etags(topo: Topology, write_key: str) -> dict[str, str]:
    return {edge.name: edge.get(write_key).headers.get("etag", "") for edge in topo.edges}


def test_a_write_reaches_every_edge(topo: Topology) -> None:
    """Publisher -> Sentinel's primary -> replicas -> every edge (instant mode), with 304s for
    the new ETag from every edge (both workers of the two-worker one)."""
    website = WEBSITE
    before = served_etags(topo, website)
    bundle = topo.set_amplitude_key("amp-scaled-1")
    assert not bundle["pending"]
    assert bundle["etag"] not in before.values()
    wait_until(lambda: set(served_etags(topo, website).values()) == {bundle["etag"]},
               "every edge serves the new version")
    for edge in topo.edges:
        for _ in range(4):  # new connections: both workers of the two-worker edge
            reply = edge.get(website, bundle["etag"])
            assert reply.status == 304, (edge.name, reply.status)


def test_failover_loses_no_accepted_write(topo: Topology) -> None:
    """Kill the primary mid-stream of writes: Sentinel promotes a replica, the publisher
    follows it, every edge ends up serving the last accepted write, and no edge answers
    anything but 200/304 for a live key meanwhile."""
    website = WEBSITE
    old_primary = topo.primary_port()
    accepted = []
    with Watch(topo) as watch:
        for i in range(5):
            accepted.append(topo.set_amplitude_key(f"amp-before-{i}"))
        kill(topo.primary)
        for i in range(40):  # writes while Sentinel notices and promotes (a few seconds)
            accepted.append(topo.set_amplitude_key(f"amp-during-{i}"))
            if i > 5 and topo_primary_moved(topo, old_primary):
                break
        wait_until(lambda: topo_primary_moved(topo, old_primary), "Sentinel promotes a replica")
        for i in range(5):
            accepted.append(topo.set_amplitude_key(f"amp-after-{i}"))
        last = accepted[-1]
        wait_until(lambda: set(served_etags(topo, website).values()) == {last["etag"]},
                   "every edge serves the last accepted write", timeout=20)
    pending = sum(1 for bundle in accepted if bundle["pending"])
    assert not any(bundle["pending"] for bundle in accepted[-5:]), "publisher did not follow"
    assert topo.publisher is not None
    publisher = topo.publisher
    wait_until(lambda: "Redis restarted or changed (run_id" in publisher.log(20_000),
               "the promotion starts serve's comparison of every source with the new primary")
    versions = [bundle["version"] for bundle in accepted]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert watch.bad == [], watch.bad[:10]
    assert all(watch.statuses[edge.name, 200] for edge in topo.edges), watch.statuses
    status, published = topo.api("GET", "/v1beta/workspaces/acme/sources/website/publish")
    assert status == 200, published
    print(f"{len(accepted)} writes, {pending} accepted as pending; statuses {watch.statuses}; "
          f"stale answers {watch.stale}")


def topo_primary_moved(topo: Topology, old: int) -> bool:
    try:
        return topo.primary_port() != old
    except Exception:  # Sentinels mid-failover may disagree for a moment
        return False


def test_replica_restarted_empty_keeps_its_edge_serving(topo: Topology) -> None:
    """The replica the Sentinel-located edge reads, restarted without its data: the edge on it
    by REDIS_URL answers what it held (stale-marked), never 404 or 503, until the replica has
    resynced, then fresh again with the write made meanwhile; the located edge moves to the
    other replica."""
    subscribers = [len(edge_subscribers(r.port)) for r in topo.replicas]
    fixed_subscribers = [2, 1]  # edge "fixed" (two workers) on replica 1, "second" on 2
    [index] = [i for i in (0, 1) if subscribers[i] > fixed_subscribers[i]]
    replica, edge = topo.replicas[index], topo.edges[index]
    with redis.Redis(port=topo.primary.port) as client:  # a full sync that takes a moment
        client.config_set("repl-diskless-sync-delay", 2)
    with Watch(topo) as watch:
        replica.stop()
        for leftover in Path(replica.dir).iterdir():  # the RDB of its last sync: an empty disk
            leftover.unlink()
        replica.start()
        wait_until(lambda: watch.stale_from[edge.name] > 0, "its edge serves held copies stale")
        assert not linked(replica.port)
        bundle = topo.set_amplitude_key("amp-while-syncing")
        wait_until(lambda: linked(replica.port), "the replica resynced", timeout=20)
        wait_until(lambda: served_etags(topo, WEBSITE)[edge.name] == bundle["etag"],
                   "the edge on it serves the write made meanwhile")
        wait_until(lambda: "x-settings-stale" not in edge.get(WEBSITE).headers,
                   "the edge on it answers fresh again")
    assert watch.bad == [], watch.bad[:10]
    assert f"instead of 127.0.0.1:{replica.port}" in topo.edges[2].process.log(), \
        "the located edge did not move off the replica"


def edge_subscribers(port: int) -> list[str]:
    """The pub/sub connections of a server but the Sentinels' (named ``sentinel-...``)."""
    with redis.Redis(port=port, decode_responses=True) as client:
        listing: str = client.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
    return [line for line in listing.splitlines() if " name=sentinel-" not in line]
