"""The outbox of the Supabase sync: recording a status change, pushing it, the drain of due
events, and the admin's retry.

An event row says what the old server's tables must show. Celery messages only say "push
event X": a push claims the row (so a duplicate message does nothing), writes through
PostgREST, and records the outcome; a failure schedules the next attempt with a countdown
(short delays) or leaves it to the drain (long ones, and any message the broker lost).
Nothing here runs inside a job's attempt, so Supabase slow or down never delays a job.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import outbox
from jobs.models import Job, JobStatus
from jobs.supabase_sync import tables
from jobs.supabase_sync.models import SyncEvent, SyncState
from snapasset.core.log_redaction import redact_secrets

logger = logging.getLogger(__name__)

PUSH_TASK = "supabase_sync.push"
# The claim, the retry schedule's bookkeeping and the drain are the shared outbox's.
OUTBOX = outbox.Outbox(
    model=SyncEvent,
    state_field="state",
    pending=SyncState.PENDING,
    succeeded=SyncState.SYNCED,
    succeeded_at_field="synced_at",
    task=PUSH_TASK,
    message_id=int,
    broker_down_log="broker unavailable; Supabase sync event %s waits for the drain",
)


# --- Recording a change (inside the job's transaction) ----------------------------------------


def event_record(*, job: Job) -> SyncEvent:
    """The outbox row of the status ``job`` now has: one INSERT in the caller's transaction,
    its push sent once that commits."""
    now = timezone.now()
    event = SyncEvent.objects.create(
        job_id=job.pk,
        job_status=job.status,
        status=tables.STATUS_FOR_JOB_STATUS[job.status],
        error_message=job.failed_reason if job.status == JobStatus.FAILED else "",
        version=job.updated_at or now,
        next_attempt_at=now,
        enqueued_at=now,
    )
    event_id = event.pk
    transaction.on_commit(lambda: event_send_message(event_id=event_id))
    return event


def event_send_message(*, event_id: int, countdown: float | None = None) -> bool:
    """Send the Celery message of a push. A broker outage is logged, not raised: the row says
    it is due, and the drain sends it once the broker is back."""
    return outbox.send_message(OUTBOX, event_id, countdown=countdown)


# --- One push ---------------------------------------------------------------------------------


def _claim(event_id: int, *, now: datetime) -> SyncEvent | None:
    """The event, counted as attempted and held for the push, when it is pending, due and
    not held by another push; None otherwise (a duplicate or stale message). An event with a
    newer one of the same job is superseded: the newer one writes the newer status."""
    with transaction.atomic():
        event = (
            SyncEvent.objects.select_for_update(of=("self",))
            .filter(pk=event_id, state=SyncState.PENDING)
            .first()
        )
        if event is None or not outbox.claimable(event, now=now):
            return None
        if SyncEvent.objects.filter(job_id=event.job_id, pk__gt=event.pk).exists():
            _finish(event, SyncState.SUPERSEDED)
            return None
        # Past every request's timeout and the task's time limit.
        outbox.hold(event, now=now, seconds=5 * settings.SUPABASE_SYNC_TIMEOUT_SECONDS + 30)
        return event


def _finish(event: SyncEvent, state: str, *, error: str = "") -> None:
    outbox.finish(OUTBOX, event, state, error=error)


def event_push(*, event_id: int) -> str | None:
    """One push of an event: claim it, write the job's row (and images) to Supabase, record
    the outcome. Returns what the status write did, or None when nothing was pushed.
    With the sync switched off the event waits, pending, for it to be on again (the drain
    then sends it)."""
    if not settings.SUPABASE_SYNC_TABLES:
        return None
    event = _claim(event_id, now=timezone.now())
    if event is None:
        return None
    job = Job.objects.select_related("owner").filter(pk=event.job_id).first()
    if job is None:  # deleted meanwhile (the cascade takes the event too)
        return None
    first_write = not SyncEvent.objects.filter(job_id=job.pk, state=SyncState.SYNCED).exists()
    try:
        outcome = tables.job_write(
            job, job_status=event.job_status, status=event.status,
            error_message=event.error_message, version=event.version, first_write=first_write,
        )  # fmt: skip
    except SoftTimeLimitExceeded:
        _failed(event, "Timed out (task time limit)")
        return None
    except Exception as exc:  # PostgREST's answer, a timeout, a refused connection, ...
        _failed(event, tables.describe_error(exc))
        return None
    _finish(event, SyncState.SYNCED)
    logger.info(
        "supabase sync: generation %s of job %s is %s (%s)",
        job.generation_id, job.pk, event.status, outcome,
    )  # fmt: skip
    return outcome


def retry_delay(*, attempts: int) -> float | None:
    """Seconds until the next push after ``attempts`` failed ones (None: give up): the
    schedule's delay plus up to 10% jitter."""
    schedule = settings.SUPABASE_SYNC_RETRY_SCHEDULE
    if attempts > len(schedule):
        return None
    return float(schedule[attempts - 1]) * random.uniform(1.0, 1.1)


def _failed(event: SyncEvent, error: str) -> None:
    error = redact_secrets(error)
    delay = retry_delay(attempts=event.attempts)
    if delay is None:
        _finish(event, SyncState.FAILED, error=error)
        logger.warning(
            "supabase sync event %s of job %s failed after %d attempts: %s",
            event.pk, event.job_id, event.attempts, error,
        )  # fmt: skip
        return
    logger.info(
        "supabase sync event %s of job %s: attempt %d failed (%s); next in %.0f s",
        event.pk, event.job_id, event.attempts, error, delay,
    )  # fmt: skip
    outbox.retry_later(OUTBOX, event, error=error, delay=delay)


# --- The drain (beat) and retry (admin) ------------------------------------------------------


def events_drain_due() -> dict[str, int]:
    """Send the message of every pending event that is due and has none on its way: the long
    retry delays, and the messages a broker outage or a lost message left behind."""
    sent = outbox.drain_due(OUTBOX)
    if sent:
        logger.info("supabase sync drain: sent %d due events", sent)
    return {"sent": sent}


def event_retry(*, event: SyncEvent) -> SyncEvent:
    """Push an event again now (an operator's action), its retry schedule started over."""
    with transaction.atomic():
        event = SyncEvent.objects.select_for_update().get(pk=event.pk)
        restarted: SyncEvent = outbox.start_over(OUTBOX, event)
    return restarted
