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
PROBE_TIMEOUT_SECONDS = 0.5
# The sweeper's reads of the queues, one page per command.
READ_TIMEOUT_SECONDS = 10


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
    """A client for the quick reads of /health and /metrics (no retry: a frozen broker
    costs one timeout)."""
    return redis_client(url=current_app.conf.broker_url, timeout=PROBE_TIMEOUT_SECONDS, retries=0)


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


# Messages read per LRANGE: one page of a long backlog is a short command for Redis (the
# sweeper reads a 50,000-message backlog in 25 of them) and a bounded buffer for us.
READ_PAGE = 2000


def held_job_ids(queues: list[str], *, since: float) -> set[str]:
    """The ids of the jobs whose message the broker holds for ``queues``: waiting in a list
    (any priority), or taken by a worker since ``since`` (unix time) and not yet
    acknowledged. The lists are read page by page, however long. Raises when the broker
    cannot be read."""
    keys = [key for queue in sorted(queues) for key in queue_keys(queue)]
    client = _reader()
    held: set[str] = set()
    for key in keys:
        start = 0
        while True:
            page = client.lrange(key, start, start + READ_PAGE - 1)
            held.update(_message_job_id(raw) for raw in page)
            if len(page) < READ_PAGE:
                break
            start += READ_PAGE
    return held | taken_job_ids(since=since)


def taken_job_ids(*, since: float) -> set[str]:
    """The jobs whose message a worker took since ``since`` (unix time) and has not yet
    acknowledged (kombu's ``unacked`` hash, indexed by delivery time)."""
    options = _transport_options()
    client = _reader()
    # Without decode_responses (the factory's default) Redis answers bytes.
    tags = cast(
        "list[bytes]",
        client.zrangebyscore(options.get("unacked_index_key", "unacked_index"), since, "+inf"),
    )
    if not tags:
        return set()
    unacked = client.hmget(options.get("unacked_key", "unacked"), tags)
    # Each entry is [message, exchange, routing_key].
    return {_message_job_id(json.loads(entry)[0]) for entry in unacked if entry}


def _reader() -> redis.Redis:
    # Pages are short commands: the probe's timeout is ample, and a frozen broker does not
    # hold the sweeper.
    return _client(timeout=READ_TIMEOUT_SECONDS)


def _message_job_id(raw: Any) -> str:
    """The job a message is for: its task id is ``<job id>.<delivery>`` (or, for messages
    sent before deliveries had ids of their own, the job id)."""
    message = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
    headers = message.get("headers") or {}
    properties = message.get("properties") or {}
    task_id = str(headers.get("id") or properties.get("correlation_id") or "")
    return task_id.partition(".")[0]
