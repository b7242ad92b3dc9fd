"""Publishing what a Redis failure left pending, beside the Config API (``serve``).

A write commits to SQLite with an outbox record, then publishes to Redis; when Redis fails,
the answer says ``pending`` and the record waits in SQLite (publisher/service.py). Left alone
it would wait for the source's next write or an operator's ``republish --all`` — and a webhook
sender that resends on "pending" gets its first reply back, not a new attempt. So ``serve``
compares every source's Redis pointer with SQLite at start (a publisher stopped between COMMIT
and publish), again whenever Redis's ``run_id`` changes or ``sc:loaded`` is gone (a Redis
restarted without its data, or flushed, would otherwise answer 404 for every source), and
retries the outbox every ``PUBLISHER_RETRY_INTERVAL`` seconds; a source deleted while Redis
was down is removed from it the same way. Once such a comparison leaves nothing pending,
``sc:loaded`` is set (edge/keyspace.py): the edge may answer an absent source 404 again. The
outbox is in SQLite (``unpublished``), so what the CLI or a stopped ``serve`` left pending is
retried too.
"""

from __future__ import annotations

import asyncio
import logging

import redis
from starlette.concurrency import run_in_threadpool

from edge import keyspace
from publisher.errors import Busy
from publisher.service import Service

log = logging.getLogger("publisher.retry")


async def publish_pending(service: Service, interval: float) -> None:
    """Run until cancelled: check every source once, and again whenever Redis is another
    server (restarted, perhaps empty), lost ``sc:loaded`` (flushed) or pending sources were
    published (a timed-out write may land late), then publish the pending ones each
    ``interval`` seconds; set ``sc:loaded`` once a check leaves nothing pending. Logs what it
    publishes and, once per change, what stays pending."""
    checked = False  # every source compared with Redis since it last changed
    check = ""  # the comparison that may set sc:loaded once nothing is pending
    server = None  # Redis's run_id
    reported = 0  # the pending count last logged
    down = False  # Redis failed last round (an outage is logged once)
    while True:
        try:
            publisher = service.publisher
            if publisher is not None:
                now_serving = await run_in_threadpool(publisher.server_id)
                if server is not None and now_serving != server:
                    log.warning("Redis restarted or changed (run_id %s); checking every "
                                "source against it", now_serving)
                    checked = False
                server = now_serving
                if checked and not check and not await run_in_threadpool(publisher.loaded):
                    log.warning("Redis lost %s (flushed?); checking every source against it",
                                keyspace.LOADED_KEY)
                    checked = False
            down = False  # Redis answers again: the next outage is logged too
            if not checked:
                if publisher is not None:
                    check = await run_in_threadpool(publisher.begin_check)
                found = await run_in_threadpool(service.find_pending)
                checked = True
                if found:
                    log.warning("%d sources are not published to Redis as SQLite has them; "
                                "publishing them", found)
            if service.pending:
                published, left = await run_in_threadpool(service.retry_pending)
                if published:
                    log.warning("brought %d pending sources up to date in Redis", published)
                if published and not left:
                    # A write that timed out on a hung Redis may still run once it resumes,
                    # after a newer one: compare every source with Redis once more.
                    checked = False
                if left and left != reported:
                    log.warning("%d sources still pending: Redis unreachable; retrying every "
                                "%gs", left, interval)
                reported = left
            elif check and publisher is not None:  # the check left nothing pending
                if not await run_in_threadpool(publisher.mark_loaded, check,
                                               int(service.clock())):
                    checked = False  # Redis lost the check's key meanwhile: check again
                check = ""
        except redis.RedisError as exc:
            if not down:
                log.warning("Redis unreachable (%s); checking again every %gs", exc, interval)
            down, reported = True, 0
        except Busy as exc:  # other writes held the lock: they publish too; try again later
            log.info("%s; trying again in %gs", exc.message, interval)
        except Exception:  # a bug must not stop the retries: log it, try again later
            log.exception("publishing pending sources failed; trying again in %gs", interval)
        await asyncio.sleep(interval)
