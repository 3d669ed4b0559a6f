"""The one way the project gets a Redis client (Celery's broker connection is kombu's own).

Every use names the timeouts it can afford (a worker's event loop, a publisher holding a
state change, a health check), so they stay beside the code that needs them; this module
only builds the client the same way for all: from a URL (REDIS_URL unless the caller reads
another, such as the broker's), with redis-py's own URL parsing (TLS, password, db number).
Clients are kept per process and profile, so each use has one connection pool.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    import redis
    import redis.asyncio


def redis_client(
    *,
    timeout: float | None,
    connect_timeout: float | None = None,
    retries: int | None = None,
    url: str | None = None,
) -> redis.Redis:
    """A client of ``url`` (default REDIS_URL) whose commands give up after ``timeout``
    seconds and whose connects after ``connect_timeout`` (default: ``timeout``).

    ``retries``: None keeps redis-py's default retries (with backoff); a number retries a
    failed command that many times at once, without backoff (a stale pooled connection is
    replaced in one retry; backoff would hold the caller for seconds while Redis is down).
    """
    return _cached_client(
        url or settings.REDIS_URL,
        timeout,
        timeout if connect_timeout is None else connect_timeout,
        retries,
    )


@functools.cache
def _cached_client(
    url: str, timeout: float | None, connect_timeout: float | None, retries: int | None
) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if retries is None:
        return redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=connect_timeout
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), retries),
    )


class SharedConnectionPool:
    """``pool_class`` for Django's RedisCache (settings.CACHES): one connection pool per
    process and server, whichever cache object asks.

    Django keeps cache objects per thread and, under ASGI, per request context: every request
    of the web process got a new ``RedisCache``, hence a new pool and a new connection (a
    TCP connect and a HELLO/SELECT handshake before the throttle's GET), thrown away after
    the request. With this class the pools, and their idle connections, are shared.
    redis-py's pools are thread-safe and start afresh in a forked child (their pid check).
    """

    @classmethod
    def from_url(cls, url: str, **options: object) -> redis.ConnectionPool:
        return _shared_pool(url, tuple(sorted(options.items())))


@functools.cache
def _shared_pool(url: str, options: tuple[tuple[str, object], ...]) -> redis.ConnectionPool:
    import redis

    return redis.ConnectionPool.from_url(url, **dict(options))


def async_redis_client(*, client_name: str, health_check_interval: int) -> redis.asyncio.Redis:
    """A new asyncio client of REDIS_URL, for one long-lived subscription. Not shared: its
    owner closes it when the subscription ends (and makes another to reconnect)."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(
        settings.REDIS_URL,
        health_check_interval=health_check_interval,
        client_name=client_name,
    )


# After a Redis call on a request path failed (a timeout: the server is frozen or the network
# drops packets), the next calls of this process to the same server are not tried for this
# long: one request pays one timeout, not one per call. Short, because a message not sent
# meanwhile waits for the sweeper (JOB_ENQUEUE_OVERDUE_SECONDS).
OUTAGE_MEMORY_SECONDS = 2.0
_outages: dict[str, float] = {}


def record_outage(url: str | None = None) -> None:
    """A call to ``url`` (default REDIS_URL) just failed."""
    _outages[url or settings.REDIS_URL] = time.monotonic() + OUTAGE_MEMORY_SECONDS


def outage_known(url: str | None = None) -> bool:
    """Whether a call to ``url`` (default REDIS_URL) failed less than OUTAGE_MEMORY_SECONDS
    ago: callers that can do without Redis skip it meanwhile."""
    return _outages.get(url or settings.REDIS_URL, 0.0) > time.monotonic()


def forget_outages() -> None:
    """Forget every outage seen (tests that break Redis on purpose)."""
    _outages.clear()
