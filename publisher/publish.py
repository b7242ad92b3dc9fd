"""The Redis writer: immutable bundle versions, an atomic current pointer, bounded history.

A publish is one Lua script (atomic, like MULTI/EXEC) that writes the version hash
``sc:{wk}:v:<n>``, records ``n`` in ``sc:{wk}:versions``, moves ``sc:{wk}:current``, sends
``<wk> <n>`` on ``sc:published`` (edges in instant mode re-check at once) and deletes versions
beyond ``keep_versions``, never the current one — so an edge that reads the pointer and then
the hash never finds a missing or half-written version. The script is also the publishers'
only ordering: it refuses a version older than the one the pointer names (compare-and-set),
so two publisher processes, or a late retry, never move a source back. Versions only grow
(a rollback is a new version with the old bytes), so the newest commit always wins. A write
given ``over``, the exact pointer it read, also replaces that pointer when it names a higher
version: what Redis serves above SQLite's current version (a copy of another database) is
replaced that way, and nothing else. All of a source's keys share one hash tag, so the script
also runs on Redis Cluster, and ``write_many`` pipelines many sources' scripts per round trip.

``sc:loaded`` (edge/keyspace.py) says this Redis holds every source: ``begin_check`` opens a
comparison, ``mark_loaded`` sets the key only if nothing flushed Redis since.

It installs :class:`~publisher.core.bundle.Bundle` values as they are made (bytes, gzip and
ETag computed once) and as SQLite keeps them, so Redis can be rebuilt from SQLite byte for
byte. Redis holds what edges serve, the gzip bytes and their metadata, not the uncompressed
JSON; and only the last ``keep_versions`` versions (``PUBLISHER_REDIS_KEEP_VERSIONS``): the
current one and the ones an edge that read an older pointer may still fetch. Rollback, diff
and republish read SQLite's history (``PUBLISHER_KEEP_VERSIONS``), never Redis's.

A write answers with a :class:`PublishResult`: the version, whether it is new, and whether
Redis has it yet.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis

from edge import keyspace
from publisher.core.bundle import Bundle


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a write did to the source's bundle."""

    write_key: str
    revision: int
    version: int
    etag: str
    published_at: int
    changed: bool  # a new bundle version was made
    pending: bool = False  # committed, but Redis could not be written yet
    error: str = ""
    visible_everywhere_by: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "write_key": self.write_key, "revision": self.revision, "version": self.version,
            "etag": self.etag, "published_at": _rfc3339(self.published_at),
            "changed": self.changed, "pending": self.pending,
        }
        if self.visible_everywhere_by is not None:
            out["visible_everywhere_by"] = _rfc3339(self.visible_everywhere_by)
        if self.error:
            out["error"] = self.error
        return out


def served(pointer: bytes | None) -> tuple[int, str] | None:
    """``(version, etag)`` a raw ``current`` pointer names; ``None`` when there is none or it
    is malformed (a write replaces it: the install script reads no version in it)."""
    if pointer is None:
        return None
    try:
        return keyspace.decode_pointer(pointer)
    except (ValueError, UnicodeDecodeError):
        return None


# One publish, atomically: the version hash, its place in the history, the pointer, the
# message and the pruning run as one script, so a reader never sees a pointer to a missing or
# half-written version, and many publishes can share one round trip (``write_many``). Every key
# carries the source's hash tag; the pruned version keys are built from KEYS[1]'s tag, in the
# same slot. The script refuses (-1) a version below the one the pointer names, unless the
# pointer is ARGV[10] (``over``: the one the caller read and may replace; empty: none); a
# malformed pointer names no version.
_INSTALL = """
local vkey, zkey, ckey = KEYS[1], KEYS[2], KEYS[3]
local version = ARGV[1]
local current = redis.call('GET', ckey)
if current and current ~= ARGV[10] then
  local served = tonumber(string.match(current, '^(%d+) '))
  if served and served > tonumber(version) then
    return -1
  end
end
redis.call('HSET', vkey, 'gzip', ARGV[2], 'etag', ARGV[3], 'published_at', ARGV[4],
           'revision', ARGV[5], 'version', version)
redis.call('ZADD', zkey, version, version)
redis.call('SET', ckey, ARGV[6])
redis.call('PUBLISH', ARGV[8], ARGV[9])
local excess = redis.call('ZRANGE', zkey, 0, -(tonumber(ARGV[7]) + 1))
local prefix = string.sub(vkey, 1, string.len(vkey) - string.len(version))
local pruned = 0
for _, v in ipairs(excess) do
  if v ~= version then
    redis.call('ZREM', zkey, v)
    redis.call('DEL', prefix .. v)
    pruned = pruned + 1
  end
end
return pruned
"""

# ``sc:loaded`` is set only if the comparison's own key survived it (a FLUSHALL meanwhile
# deletes both). The check key's hash tag is the marker's name: one slot on Redis Cluster.
_MARK_LOADED = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
CHECK_SECONDS = 86_400  # a comparison left unfinished (a stopped process) leaves no key


class RedisPublisher:
    """Writes bundles for the single publisher of a deployment (sync client, raw bytes)."""

    def __init__(self, client: redis.Redis, *, keep_versions: int = 2) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.client = client
        self.keep_versions = keep_versions
        self._install_script = client.register_script(_INSTALL)
        self._mark_loaded_script = client.register_script(_MARK_LOADED)

    def write(self, write_key: str, bundle: Bundle, *, over: bytes = b"") -> bool:
        """Publish a version: hash, history, pointer, message and pruning, atomically —
        unless Redis serves a higher version of the source, which a concurrent publish
        (another process, or one that got there first) wrote: then nothing, and False.
        Versions only grow, so a late write never moves the pointer back. ``over``: a pointer
        (as ``pointer`` read it) this write replaces even if it names a higher version."""
        return bool(self._install(write_key, bundle, self.client, over) != -1)

    def write_many(self, items: Iterable[tuple[str, Bundle]], *, batch: int = 500,
                   refused: list[str] | None = None) -> int:
        """``write`` for many sources, ``batch`` scripts per round trip; returns how many
        scripts ran, and adds to ``refused`` the write keys whose version Redis refused.

        Each source is still installed atomically; a Redis error propagates, and the sources
        of the failed batch may or may not have been written (writing them again is harmless).
        """
        items = list(items)
        if len(items) == 1:  # (a pipeline asks SCRIPT EXISTS first: one round trip more)
            (write_key, bundle), = items
            if not self.write(write_key, bundle) and refused is not None:
                refused.append(write_key)
            return 1
        done = 0
        keys: list[str] = []
        pipe = self.client.pipeline(transaction=False)

        def run() -> int:
            answers = pipe.execute()
            if refused is not None:
                refused.extend(k for k, answer in zip(keys, answers, strict=True) if answer == -1)
            keys.clear()
            return len(answers)

        for write_key, bundle in items:
            self._install(write_key, bundle, pipe, b"")
            keys.append(write_key)
            if len(pipe) >= batch:
                done += run()
        if len(pipe):
            done += run()
        return done

    def _install(self, write_key: str, bundle: Bundle, target: Any, over: bytes) -> Any:
        keys = [keyspace.version_key(write_key, bundle.version),
                keyspace.versions_key(write_key), keyspace.current_key(write_key)]
        args: list[bytes | str | int] = [
            bundle.version, bundle.gzip, bundle.etag, bundle.published_at,
            bundle.revision, keyspace.encode_pointer(bundle.version, bundle.etag),
            self.keep_versions, keyspace.PUBLISHED_CHANNEL,
            keyspace.encode_message(write_key, bundle.version), over]
        return self._install_script(keys=keys, args=args, client=target)

    def pointer(self, write_key: str) -> bytes | None:
        """The current pointer as Redis holds it (what ``write``'s ``over`` names)."""
        return cast(bytes | None, self.client.get(keyspace.current_key(write_key)))

    def current(self, write_key: str) -> tuple[int, str] | None:
        """``(version, etag)`` of the current pointer; ``None``: none, or malformed."""
        return served(self.pointer(write_key))

    def currents(self, write_keys: Sequence[str]) -> list[tuple[int, str] | None]:
        """``current`` of many sources in one MGET."""
        return [served(cast(bytes | None, raw))
                for raw in self.client.mget([keyspace.current_key(k) for k in write_keys])]

    def server_id(self) -> str:
        """The Redis server's ``run_id``: it changes when Redis restarts (perhaps empty) or
        another server takes over."""
        return str(self.client.info("server")["run_id"])

    def begin_check(self) -> str:
        """Open a comparison of every source with Redis: returns its key, for ``mark_loaded``."""
        check = f"{{{keyspace.LOADED_KEY}}}:check:{secrets.token_hex(8)}"
        self.client.set(check, b"1", ex=CHECK_SECONDS)
        return check

    def mark_loaded(self, check: str, now: int) -> bool:
        """Set ``sc:loaded`` to ``now`` once the comparison ``check`` found Redis holding every
        source — unless Redis lost ``check`` meanwhile (flushed, restarted empty): False."""
        return bool(self._mark_loaded_script(keys=[check, keyspace.LOADED_KEY], args=[now]))

    def loaded(self) -> bool:
        """Whether ``sc:loaded`` exists (the publisher never deletes it: Redis lost it)."""
        return bool(self.client.exists(keyspace.LOADED_KEY))

    def delete_source(self, write_key: str) -> None:
        """Remove every key of the source, then notify so instant-mode edges evict it.

        The message carries version 0, which no publish ever uses: "this source is gone".
        """
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", keyspace.tag(write_key)) + ":*"
        keys = list(self.client.scan_iter(match=pattern, count=1000))
        if keys:
            # One DEL is atomic: the pointer and the hashes disappear together.
            self.client.delete(*keys)
        self.client.publish(keyspace.PUBLISHED_CHANNEL, keyspace.encode_message(write_key, 0))
