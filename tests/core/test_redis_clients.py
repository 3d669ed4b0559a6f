"""The one Redis client factory: each use keeps its own timeouts and gets one pool per process."""

from __future__ import annotations

from django.conf import settings

from snapasset.core.redis_clients import redis_client


def test_each_use_gets_its_timeouts_and_keeps_one_client() -> None:
    publisher = redis_client(timeout=2, connect_timeout=1, retries=1)
    heartbeat = redis_client(timeout=1)
    assert redis_client(timeout=2, connect_timeout=1, retries=1) is publisher
    assert heartbeat is not publisher
    publisher_kwargs = publisher.connection_pool.connection_kwargs
    assert (publisher_kwargs["socket_timeout"], publisher_kwargs["socket_connect_timeout"]) == (
        2,
        1,
    )
    assert publisher_kwargs["retry"].get_retries() == 1
    assert heartbeat.connection_pool.connection_kwargs["socket_connect_timeout"] == 1


def test_clients_talk_to_the_configured_redis_and_its_db() -> None:
    client = redis_client(timeout=2)
    expected_db = settings.EVENTSTREAM_REDIS.get("db", 0)
    assert client.connection_pool.connection_kwargs.get("db", 0) == expected_db
    assert client.ping()


def test_another_url_gets_its_own_client() -> None:
    base, own_db = settings.REDIS_URL.rsplit("/", 1)
    other_db = 14 if own_db != "14" else 13  # a run may be given db 14 itself
    other = f"{base}/{other_db}"
    assert redis_client(timeout=2, url=other) is not redis_client(timeout=2)
    assert redis_client(timeout=2, url=other).connection_pool.connection_kwargs["db"] == other_db


def test_every_cache_object_of_a_process_shares_one_connection_pool() -> None:
    # Django makes a cache object per thread and, under ASGI, per request: each used to
    # make its own pool, so every request paid a new connection (a connect, HELLO, SELECT)
    # before the submit throttle's GET.
    from asgiref.sync import async_to_sync, sync_to_async
    from django.core.cache import caches

    def pool_of_this_request() -> object:
        cache = caches["default"]
        cache.get("any-key")
        return cache._cache._get_connection_pool(write=True)  # type: ignore[attr-defined]

    async def request() -> object:
        return await sync_to_async(pool_of_this_request, thread_sensitive=False)()

    first, second = async_to_sync(request)(), async_to_sync(request)()
    assert first is second
    assert caches.create_connection("default")._cache._get_connection_pool(True) is first  # type: ignore[attr-defined]
    # Its timeouts are the cache's own (settings.CACHES), not another client's.
    assert first.connection_kwargs["socket_timeout"] == 0.5  # type: ignore[attr-defined]
