"""Publishing what a Redis failure left pending, beside the Config API (``serve``).

A write commits to SQLite, then publishes to Redis; when Redis fails in between, the answer
says ``pending`` and the change waits in SQLite (publisher/service.py). Left alone it would
wait for the source's next write or an operator's ``republish --all`` — and a webhook sender
that resends on "pending" gets its first reply back, not a new attempt. So ``serve`` compares
every source's Redis pointer with SQLite at start (a publisher stopped between commit and
publish) and again whenever Redis's ``run_id`` changes (a Redis restarted without its data
would otherwise answer 404 for every source), and retries the pending sources every
``PUBLISHER_RETRY_INTERVAL`` seconds; a source deleted while Redis was down is removed from
it the same way. Pending sources are recorded in SQLite (``unpublished``), so what the CLI or
a stopped ``serve`` left pending is retried too.
"""

from __future__ import annotations

import asyncio
import logging

import redis
from starlette.concurrency import run_in_threadpool

from publisher.errors import Busy
from publisher.service import Service

log = logging.getLogger("publisher.retry")


async def publish_pending(service: Service, interval: float) -> None:
    """Run until cancelled: check every source once, and again whenever Redis is another
    server (restarted, perhaps empty) or pending sources were published (a timed-out write
    may land late), then publish the pending ones each ``interval`` seconds. Logs what it
    publishes and, once per change, what stays pending."""
    checked = False
    server = None
    reported = 0
    while True:
        try:
            if service.publisher is not None:
                now_serving = await run_in_threadpool(service.publisher.server_id)
                if server is not None and now_serving != server:
                    log.warning("Redis restarted or changed (run_id %s); checking every "
                                "source against it", now_serving)
                    checked = False
                server = now_serving
            if reported == -1:  # Redis answers again: the next outage is logged too
                reported = 0
            if not checked:
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
        except redis.RedisError as exc:
            if reported != -1:  # once per outage
                log.warning("Redis unreachable (%s); checking again every %gs", exc, interval)
            reported = -1
        except Busy as exc:  # other writes held the lock: they publish too; try again later
            log.info("%s; trying again in %gs", exc.message, interval)
        except Exception:  # a bug must not stop the retries: log it, try again later
            log.exception("publishing pending sources failed; trying again in %gs", interval)
        await asyncio.sleep(interval)
