"""Stored events, for Last-Event-ID replay: django-eventstream's storage (ids per channel, no
holes), in Redis by default (``LiveEventStorage``) or its DjangoModelStorage with
EVENTSTREAM_STORAGE=database."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from django_eventstream.event import Event
from django_eventstream.storage import EVENT_TIMEOUT, RedisStorage

from jobs.live.frames import LiveEvent, sse_frame
from snapasset.core.redis_clients import outage_known, record_outage, redis_client

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

# Most events replayed from storage in one read (a job has ~10).
REPLAY_LIMIT = 1000
STORAGE_TIMEOUT_SECONDS = 0.5


def store_event(channel: str, event_type: str, data: str) -> int | None:
    """Append the event to django-eventstream's storage; its id, or None if not stored."""
    from django_eventstream.utils import get_channelmanager, get_storage

    storage = get_storage()
    if storage is None or not get_channelmanager().is_channel_reliable(channel):
        return None
    if outage_known():
        return None  # Redis failed a moment ago: see redis_clients.outage_known
    try:
        return int(storage.append_event(channel, event_type, data).id)
    except Exception:
        record_outage()
        logger.warning("could not store %s event on %s", event_type, channel, exc_info=True)
        return None


def stored_events_after(channel: str, last_id: int) -> list[LiveEvent] | None:
    """Stored events after ``last_id``, or None when that id is unknown: expired, or above
    the current id (the ids restarted after Redis lost its data)."""
    from django_eventstream.storage import EventDoesNotExist
    from django_eventstream.utils import get_storage

    storage = get_storage()
    try:
        if last_id > int(storage.get_current_id(channel)):
            return None
        stored = storage.get_events(channel, last_id, limit=REPLAY_LIMIT)
    except EventDoesNotExist:
        return None
    return [LiveEvent(e.id, sse_frame(e.data, e.id), e.type == "final") for e in stored]


# Store an event and publish it in one round trip: the per-channel counter gives the id, the
# event is kept for EVENT_TIMEOUT, the counter expires with it, and the message published to
# the web processes carries the id (ARGV[4] .. id .. ARGV[5] is its JSON).
APPEND_AND_PUBLISH = """
local id = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2] .. id, ARGV[1], 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4] .. id .. ARGV[5])
return id
"""


def store_and_publish(
    channel: str, event_type: str, data: str, *, pubsub: str, message: tuple[str, str]
) -> bool:
    """Store the event and publish it with its id in one round trip, when the storage is
    ours (Redis) and keeps this channel; False when the caller must store and publish the
    usual way. A failure is logged (the row stays the truth) and counts as done."""
    from django_eventstream.utils import get_channelmanager, get_storage

    storage = get_storage()
    if not isinstance(storage, LiveEventStorage):
        return False
    if not get_channelmanager().is_channel_reliable(channel):
        return False
    if outage_known():
        logger.warning("live event on %s not stored: Redis is unavailable", channel)
        return True
    try:
        storage.append_and_publish(channel, event_type, data, pubsub=pubsub, message=message)
    except Exception:
        record_outage()
        logger.warning("could not store %s event on %s", event_type, channel, exc_info=True)
    return True


class LiveEventStorage(RedisStorage):
    """django-eventstream's RedisStorage, with the per-channel counter expiring like the
    events it numbers (upstream keeps one counter key per channel, so one per job, forever)
    and the event written in the same transaction as the counter's expiry."""

    def _connect(self) -> redis.Redis:
        # Upstream builds its own client from EVENTSTREAM_STORAGE_CONNECTION, without
        # timeouts; ours comes from the project's one factory, with short ones: a frozen
        # Redis must not hold a state change (cancel, retry, a worker's step) or a stream.
        return redis_client(timeout=STORAGE_TIMEOUT_SECONDS, retries=1)

    def append_event(self, channel: str, event_type: str, data: Any) -> Event:
        counter = f"event_counter:{channel}"
        ttl = EVENT_TIMEOUT * 60
        event_id = int(self.redis.incr(counter))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                f"event:{channel}:{event_id}",
                json.dumps({"type": event_type, "data": data}),
                ex=ttl,
            )
            pipe.expire(counter, ttl)
            pipe.execute()
        return Event(channel, event_type, data, id=event_id)

    def append_and_publish(
        self, channel: str, event_type: str, data: Any, *, pubsub: str, message: tuple[str, str]
    ) -> int:
        """``append_event`` and the PUBLISH of ``message`` (its JSON before and after the id),
        one script: one round trip instead of three."""
        global _script
        client = self.redis
        if _script is None:
            _script = client.register_script(APPEND_AND_PUBLISH)
        head, tail = message
        stored = json.dumps({"type": event_type, "data": data})
        keys = [f"event_counter:{channel}", f"event:{channel}:"]
        args = [stored, EVENT_TIMEOUT * 60, pubsub, head, tail]
        return int(_script(keys=keys, args=args, client=client))


# redis-py sends the script's sha, and its source once to a Redis that does not know it.
_script: Any = None
