"""Live job events: each state change is published to the job's channel.

Events are sent after the transaction that wrote the state commits, so a client never hears
of a state the database does not hold. Each is stored first with django-eventstream's
storage (an id per channel, kept 24 h, for Last-Event-ID replay: jobs.live.storage), then
published on Redis pub/sub, where every web process (jobs.live.hub) hears it and pushes it to
its connected streams. Publishing never breaks a job: a failure is logged and the row stays
the truth.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from jobs.live.channels import STATS_CHANNEL, job_channel, pubsub_channel
from jobs.live.storage import store_and_publish, store_event
from jobs.models import Job, JobKind, JobStatus
from jobs.results import image_job_result
from snapasset.core.redis_clients import outage_known, record_outage, redis_client

logger = logging.getLogger(__name__)

# Redis answers a publish in well under a millisecond; a frozen one must not hold a submit.
PUBLISH_TIMEOUT_SECONDS = 0.5


def job_event_payload(job: Job, *, event_type: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": event_type,
        "jobId": str(job.id),
        "status": job.status,
        "progress": job.progress,
        "attemptsMade": job.attempts_made,
        "timestamp": int(time.time() * 1000),
    }
    if job.status == JobStatus.FAILED:
        payload["failedReason"] = job.failed_reason
    if job.status == JobStatus.DELAYED:
        # As GET /api/jobs/{jobId} says them: until when, and why (a retry, or the job's
        # turn at the image model's shared rate limit).
        payload["nextRunAt"] = job.retry_at.isoformat() if job.retry_at else None
        payload["delayReason"] = job.delay_reason or "retry"
    return payload


def job_final_payload(job: Job) -> dict[str, Any]:
    """What a `final` event adds: the result (as GET .../result has it, URLs as stored), the
    failure reason or the cancellation."""
    if job.status == JobStatus.COMPLETED:
        if job.kind == JobKind.IMAGE_GENERATION:
            # No DRF (a worker runs without it); the images the worker's completion has in
            # hand (prefetched) are not read again.
            return {"result": image_job_result(job, job.images.all())}
        from jobs.serializers import JobResultBodyField

        return {"result": JobResultBodyField().to_representation(job)}
    if job.status == JobStatus.FAILED:
        return {"failedReason": job.failed_reason}
    return {"cancelled": True}


def job_event_type(job: Job) -> str:
    return "final" if job.is_finished else "update"


def publish_job_event(job: Job, *, to_job_channel: bool = True) -> None:
    """Publish the job's current state once the surrounding transaction commits.

    ``to_job_channel=False`` (a job just created) only nudges the stats streams: nobody can
    listen on a job's channel before the response that names the job, and a stream sends
    the current state when it connects. That event was about half the cost of a submit.
    """
    if not to_job_channel:
        transaction.on_commit(stats_nudger.nudge)
        return
    event_type = job_event_type(job)
    payload = job_event_payload(job, event_type=event_type)
    if event_type == "final":
        payload.update(job_final_payload(job))
    channel = job_channel(job.id)
    # One message per state change: every web process also takes it as a nudge to refresh
    # the stats stream, so there is no separate stats message.
    transaction.on_commit(lambda: send_event(channel, event_type, payload))


def publish_stats_changed() -> None:
    """Nudge the stats streams after a change that is not a job event (rows deleted)."""
    transaction.on_commit(lambda: _publish({"c": STATS_CHANNEL, "i": None, "t": "stats"}))


# A process nudges the stats streams for new jobs at most this often; a nudge asked for
# within the interval is sent once at its end. The streams recompute the counts at most once
# per SSE_STATS_INTERVAL_SECONDS (1 s) anyway, so a burst of submits costs one PUBLISH, not
# one each, and the last submit of a burst is still seen.
STATS_NUDGE_INTERVAL_SECONDS = 0.25


class StatsNudger:
    """Coalesces the stats nudges of one process: the first at once, the rest of an interval
    as one nudge at its end (a timer thread)."""

    def __init__(self, interval: float = STATS_NUDGE_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None

    def nudge(self) -> None:
        with self._lock:
            if self._timer is not None:
                return  # a nudge is already due at the end of this interval
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                self._timer = threading.Timer(wait, self._send_due)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = time.monotonic()
        _publish({"c": STATS_CHANNEL, "i": None, "t": "stats"})

    def _send_due(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        _publish({"c": STATS_CHANNEL, "i": None, "t": "stats"})

    def reset(self) -> None:
        """In a forked child: the parent's timer thread does not exist there."""
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._timer = None


stats_nudger = StatsNudger()
os.register_at_fork(after_in_child=stats_nudger.reset)


def send_event(channel: str, event_type: str, payload: dict[str, Any]) -> None:
    """Store the event (it gets its id, for Last-Event-ID replay) and publish it to Redis,
    now (the services call ``publish_job_event``, which waits for the commit).

    django-eventstream's ``send_event`` is not used: it publishes on one fixed pub/sub
    channel for every deployment ("events_channel"), and its listener drops messages during
    Redis reconnects. The storage is still django-eventstream's (see the module docstring),
    so ids are per channel and gap-free: a stream that sees id n+2 after n knows it missed one
    and reads it from storage (jobs.live.job_stream).
    """
    data = json.dumps(payload, cls=DjangoJSONEncoder)
    # The message _publish would send, split around its id.
    head = '{"c": ' + json.dumps(channel) + ', "i": '
    tail = ', "t": ' + json.dumps(event_type) + ', "d": ' + json.dumps(data) + "}"
    if store_and_publish(channel, event_type, data, pubsub=pubsub_channel(), message=(head, tail)):
        return
    event_id = store_event(channel, event_type, data)
    publish_stored_event(channel, event_id=event_id, event_type=event_type, data=data)


def publish_stored_event(channel: str, *, event_id: int | None, event_type: str, data: str) -> None:
    """Publish an event already stored (``store_event`` gave its id) to every web process."""
    _publish({"c": channel, "i": event_id, "t": event_type, "d": data})


def _publish(message: dict[str, Any]) -> None:
    if outage_known():
        # Redis failed a moment ago: the row is the truth, and a stream that missed this
        # event reads it from storage or the row once Redis is back.
        logger.warning("live event on %s not published: Redis is unavailable", message.get("c"))
        return
    try:
        # Short timeouts: a Redis outage must not hold a request or a worker's state
        # change for long. One immediate retry covers a stale pooled connection; redis-py's
        # default retries with backoff made a submit with Redis down take seconds per event.
        client = redis_client(
            timeout=PUBLISH_TIMEOUT_SECONDS,
            connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
            retries=1,
        )
        client.publish(pubsub_channel(), json.dumps(message))
    except Exception:
        record_outage()
        logger.warning("could not publish live event on %s", message.get("c"), exc_info=True)
