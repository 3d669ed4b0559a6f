"""Live job events: each state change is published to the job's channel.

Events are sent after the transaction that wrote the state commits, so a client never hears
of a state the database does not hold. Each is stored first with django-eventstream's
storage (an id per channel, kept 24 h, for Last-Event-ID replay: ``LiveEventStorage`` in
Redis by default, its DjangoModelStorage with EVENTSTREAM_STORAGE=database), then
published on Redis pub/sub, where every web process (jobs.live) hears it and pushes it to
its connected streams. Publishing never breaks a job: a failure is logged and the row stays
the truth.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django_eventstream.channelmanager import DefaultChannelManager
from django_eventstream.event import Event
from django_eventstream.storage import EVENT_TIMEOUT, RedisStorage

if TYPE_CHECKING:
    from jobs.models import Job

logger = logging.getLogger(__name__)

STATS_CHANNEL = "stats"
JOB_CHANNEL_PREFIX = "job-"


def job_channel(job_id: object) -> str:
    return f"{JOB_CHANNEL_PREFIX}{job_id}"


def job_event_payload(job: Job, *, event_type: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": event_type,
        "jobId": str(job.id),
        "status": job.status,
        "progress": job.progress,
        "attemptsMade": job.attempts_made,
        "timestamp": int(time.time() * 1000),
    }
    if job.status == "failed":
        payload["failedReason"] = job.failed_reason
    return payload


def job_event_type(job: Job) -> str:
    return "final" if job.is_finished else "update"


def publish_job_event(job: Job, *, to_job_channel: bool = True) -> None:
    """Publish the job's current state once the surrounding transaction commits.

    ``to_job_channel=False`` (a job just created) only nudges the stats streams: nobody can
    listen on a job's channel before the response that names the job, and a stream sends
    the current state when it connects. That event was about half the cost of a submit.
    """
    from jobs.serializers import job_final_payload

    if not to_job_channel:
        publish_stats_changed()
        return
    event_type = job_event_type(job)
    payload = job_event_payload(job, event_type=event_type)
    if event_type == "final":
        payload.update(job_final_payload(job))
    channel = job_channel(job.id)
    # One message per state change: every web process also takes it as a nudge to refresh
    # the stats stream, so there is no separate stats message.
    transaction.on_commit(lambda: _send(channel, event_type, payload))


def publish_stats_changed() -> None:
    """Nudge the stats streams after a change that is not a job event (rows deleted)."""
    transaction.on_commit(lambda: _publish({"c": STATS_CHANNEL, "i": None, "t": "stats"}))


def pubsub_channel() -> str:
    """The Redis pub/sub channel of this deployment's live events.

    Pub/sub ignores Redis db numbers, so the name carries the db of REDIS_URL (and may be
    set outright with LIVE_EVENTS_CHANNEL): two deployments or test runs sharing one Redis
    server on different dbs never hear each other's events.
    """
    return str(settings.LIVE_EVENTS_CHANNEL)


def _send(channel: str, event_type: str, payload: dict[str, Any]) -> None:
    """Store the event (it gets its id, for Last-Event-ID replay) and publish it to Redis.

    django-eventstream's ``send_event`` is not used: it publishes on one fixed pub/sub
    channel for every deployment ("events_channel"), and its listener drops messages during
    Redis reconnects. The storage is still django-eventstream's (see the module docstring),
    so ids are per channel and gap-free: a stream that sees id n+2 after n knows it missed one
    and reads it from storage (jobs.live).
    """
    data = json.dumps(payload, cls=DjangoJSONEncoder)
    event_id = store_event(channel, event_type, data)
    _publish({"c": channel, "i": event_id, "t": event_type, "d": data})


def store_event(channel: str, event_type: str, data: str) -> int | None:
    """Append the event to django-eventstream's storage; its id, or None if not stored."""
    from django_eventstream.utils import get_channelmanager, get_storage

    storage = get_storage()
    if storage is None or not get_channelmanager().is_channel_reliable(channel):
        return None
    try:
        return int(storage.append_event(channel, event_type, data).id)
    except Exception:
        logger.warning("could not store %s event on %s", event_type, channel, exc_info=True)
        return None


_redis_client: Any = None


def _publish(message: dict[str, Any]) -> None:
    global _redis_client
    try:
        if _redis_client is None:
            import redis

            # Short timeouts: a Redis outage must not hold a worker's state change for long
            # (the event is stored; a reconnecting client gets it from storage).
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # One immediate retry covers a stale pooled connection; redis-py's default
            # retries with backoff made a submit with Redis down take seconds per event.
            _redis_client = redis.Redis(
                **settings.EVENTSTREAM_REDIS,
                socket_connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
                socket_timeout=2,
                retry=Retry(NoBackoff(), 1),
            )
        _redis_client.publish(pubsub_channel(), json.dumps(message))
    except Exception:
        logger.warning("could not publish live event on %s", message.get("c"), exc_info=True)


class LiveEventStorage(RedisStorage):
    """django-eventstream's RedisStorage, with the per-channel counter expiring like the
    events it numbers (upstream keeps one counter key per channel, so one per job, forever)
    and the event written in the same transaction as the counter's expiry."""

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


class JobChannelManager(DefaultChannelManager):
    """Only a job's owner and staff may read its channel; the stats channel is staff-only."""

    def can_read_channel(self, user: Any, channel: str) -> bool:
        if user is None or not user.is_authenticated:
            return False
        if user.is_staff:
            return True
        if channel.startswith(JOB_CHANNEL_PREFIX):
            from jobs.models import Job

            job_id = channel.removeprefix(JOB_CHANNEL_PREFIX)
            try:
                return Job.objects.filter(pk=job_id, owner=user).exists()
            except Exception:
                return False
        return False
