"""A small RFC 9111 / RFC 5861 cache, to model the shared and browser layers in simulation.

It reads only what the edge really sends (``Cache-Control``, ``ETag``, ``Age``) and keeps
time by the simulation's clock. ``honour_age=False`` models a cache that counts a copy's
lifetime from its own fetch and passes the stored ``Age`` on unchanged (stock nginx);
``honour_age=True`` one that starts the copy at the received ``Age`` (RFC 9111 §4.2.3) and
sends its current age, truncated to whole seconds (§5.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    at: float  # simulation time it was produced
    layer: str  # which layer produced it

    @property
    def version(self) -> int | None:
        """The bundle version an answer carries (``None`` for the unknown-key 404)."""
        raw = self.headers.get("x-settings-version")
        return int(raw) if raw is not None else None


Upstream = Callable[[dict[str, str]], Answer]


def directives(cache_control: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.lower()] = int(value) if value.strip().isdigit() else None
    return out


@dataclass
class CacheModel:
    name: str
    upstream: Upstream
    clock: Callable[[], float]
    shared: bool
    honour_age: bool
    stored: Answer | None = None
    stored_at: float = 0.0
    initial_age: float = 0.0
    upstream_calls: int = field(default=0)

    def _lifetimes(self) -> tuple[int, int]:
        assert self.stored is not None
        cc = directives(self.stored.headers.get("cache-control", ""))
        fresh = cc.get("s-maxage") if self.shared and "s-maxage" in cc else cc.get("max-age")
        return fresh or 0, cc.get("stale-while-revalidate") or 0

    def _age(self) -> float:
        return self.initial_age + (self.clock() - self.stored_at)

    def _received_age(self, answer: Answer) -> float:
        return float(answer.headers.get("age", "0")) if self.honour_age else 0.0

    def _serve(self, how: str) -> Answer:
        assert self.stored is not None
        headers = dict(self.stored.headers)
        if self.honour_age:
            headers["age"] = str(int(self._age()))
        return Answer(self.stored.status, headers, self.clock(), f"{self.name}:{how}")

    def _store(self, answer: Answer) -> None:
        cc = directives(answer.headers.get("cache-control", ""))
        if answer.status in (200, 404) and "no-store" not in cc and (
            "max-age" in cc or (self.shared and "s-maxage" in cc)
        ):
            self.stored = answer
            self.stored_at = self.clock()
            self.initial_age = self._received_age(answer)

    def _fetch(self) -> Answer:
        """Ask upstream, conditionally when the stored copy has an ETag (RFC 9111 §4.3.1)."""
        conditional = {}
        if self.stored is not None and "etag" in self.stored.headers:
            conditional["if-none-match"] = self.stored.headers["etag"]
        self.upstream_calls += 1
        answer = self.upstream(conditional)
        if answer.status == 304 and self.stored is not None:
            # Freshen the stored response with the 304's fields (RFC 9111 §4.3.4).
            merged = {**self.stored.headers, **answer.headers}
            self.stored = replace(self.stored, headers=merged)
            self.stored_at = self.clock()
            self.initial_age = self._received_age(answer)
            return self._serve("revalidated")
        self._store(answer)
        if self.stored is answer:
            return self._serve("miss")
        return answer

    def request(self, headers: dict[str, str] | None = None) -> Answer:
        """Answer a client request at the clock's current time."""
        answer = self._lookup()
        inm = (headers or {}).get("if-none-match")
        if inm is not None and answer.status == 200 and answer.headers.get("etag") == inm:
            answer = replace(answer, status=304)
        return answer

    def _lookup(self) -> Answer:
        if self.stored is None:
            return self._fetch()
        fresh, swr = self._lifetimes()
        age = self._age()
        if age < fresh:
            return self._serve("hit")
        if age < fresh + swr:
            stale = self._serve("stale")
            self._fetch()  # the background revalidation RFC 5861 §3 allows
            return stale
        return self._fetch()
