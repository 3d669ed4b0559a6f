"""The one reader of kombu's keys in the broker's Redis: queue depths and held messages.

Celery sends and consumes through kombu; /health, /metrics and the sweeper only read what
kombu keeps there. Its layout, for the Redis transport with ``queue_order_strategy:
priority``: one list per queue and priority step (``images``, ``images:1`` .. ``images:9``,
the separator and steps from CELERY_BROKER_TRANSPORT_OPTIONS), and the messages workers took
but have not acknowledged in a hash (``unacked``) indexed by delivery time (``unacked_index``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from celery import current_app

from snapasset.core.redis_clients import redis_client

if TYPE_CHECKING:
    import redis

# /health and /metrics: a broker that does not answer within this long counts as down.
PROBE_TIMEOUT_SECONDS = 2


def _client(*, timeout: float | None, connect_timeout: float | None = None) -> redis.Redis:
    # The broker as Celery is configured (the same Redis as REDIS_URL in settings), with one
    # immediate retry for a pooled connection that went stale.
    return redis_client(
        url=current_app.conf.broker_url,
        timeout=timeout,
        connect_timeout=connect_timeout,
        retries=1,
    )


def probe_client() -> redis.Redis:
    """A client for the quick reads of /health and /metrics."""
    return _client(timeout=PROBE_TIMEOUT_SECONDS)


def _transport_options() -> dict[str, Any]:
    return dict(current_app.conf.broker_transport_options or {})


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps for one queue: `images`, then `images:1`..`images:9`."""
    options = _transport_options()
    # kombu's defaults, where the settings do not say.
    sep = options.get("sep", "\x06\x16")
    steps = options.get("priority_steps") or [0, 3, 6, 9]
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in steps]


def queue_depths(queues: list[str]) -> dict[str, int]:
    """Messages waiting in each queue (all priority lists), LLEN in one round trip."""
    pipe = probe_client().pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: sum(next(lengths) for _ in queue_keys(queue)) for queue in queues}


def held_task_ids(queues: list[str], *, since: float, scan_limit: int) -> set[str] | None:
    """The task ids of every message the broker holds for ``queues``: waiting in a list (any
    priority), or taken by a worker since ``since`` (unix time) and not yet acknowledged.
    None when the lists hold more than ``scan_limit`` messages (not read). Raises when the
    broker cannot be read."""
    options = _transport_options()
    keys = [key for queue in sorted(queues) for key in queue_keys(queue)]
    # No read timeout: a long backlog (up to scan_limit messages) is read in one go.
    client = _client(timeout=None, connect_timeout=current_app.conf.broker_connection_timeout)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    if sum(pipe.execute()) > scan_limit:
        return None
    for key in keys:
        pipe.lrange(key, 0, -1)
    raw_messages = [raw for items in pipe.execute() for raw in items]
    # Without decode_responses (the factory's default) Redis answers bytes.
    tags = cast(
        "list[bytes]",
        client.zrangebyscore(options.get("unacked_index_key", "unacked_index"), since, "+inf"),
    )
    if tags:
        unacked = client.hmget(options.get("unacked_key", "unacked"), tags)
        # Each entry is [message, exchange, routing_key].
        raw_messages += [json.loads(entry)[0] for entry in unacked if entry]
    return {_message_task_id(raw) for raw in raw_messages}


def _message_task_id(raw: Any) -> str:
    message = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
    headers = message.get("headers") or {}
    properties = message.get("properties") or {}
    return str(headers.get("id") or properties.get("correlation_id") or "")
