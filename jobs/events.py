"""Live job events: each state change is published to the job's channel and the stats channel.

Events are sent with django-eventstream's ``send_event`` after the transaction that wrote the
state commits, so a client never hears of a state the database does not hold. Across
processes they travel through Redis pub/sub (EVENTSTREAM_REDIS); with DjangoModelStorage
each event is also stored with an id, so a client reconnecting with Last-Event-ID gets what
it missed. Publishing never breaks a job: a failure is logged and the row stays the truth.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django_eventstream.channelmanager import DefaultChannelManager

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

    ``to_job_channel=False`` (a job just created) pings only the stats channel: nobody can
    listen on a job's channel before the response that names the job, and a stream sends
    the current state when it connects. That event was ~half the cost of a submit.
    """
    from jobs.serializers import job_final_payload

    job_id = str(job.id)
    if to_job_channel:
        event_type = job_event_type(job)
        payload = job_event_payload(job, event_type=event_type)
        if event_type == "final":
            payload.update(job_final_payload(job))
        channel = job_channel(job.id)
        transaction.on_commit(lambda: _send(channel, event_type, payload))
    transaction.on_commit(lambda: _send(STATS_CHANNEL, "stats-changed", {"jobId": job_id}))


def publisher_fail_fast() -> None:
    """Publishing runs inside requests (after the submit's commit): with Redis down it must
    fail at once, not after redis-py's default three retries with backoff (3-4 s per event,
    two events per submit). One immediate retry still covers a stale pooled connection."""
    from django_eventstream import eventstream
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = getattr(eventstream, "redis_client", None)
    if client is not None:
        client.set_retry(Retry(NoBackoff(), 1))


def _send(channel: str, event_type: str, payload: dict[str, Any]) -> None:
    from django_eventstream import send_event

    try:
        send_event(channel, "message", payload)
    except Exception:
        logger.warning("could not publish %s event on %s", event_type, channel, exc_info=True)


class JobChannelManager(DefaultChannelManager):
    """Only a job's owner and staff may read its channel; the stats channel is staff-only."""

    def is_channel_reliable(self, channel: str) -> bool:
        # A stats event only says "refetch the counts": it needs no stored copy to replay,
        # and storing one costs a transaction with a row lock on every job state change.
        return channel != STATS_CHANNEL

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
