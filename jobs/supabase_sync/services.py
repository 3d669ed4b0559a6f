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
from datetime import datetime, timedelta

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.supabase_sync import tables
from jobs.supabase_sync.models import SyncEvent, SyncState
from snapasset.core.log_redaction import redact_secrets

logger = logging.getLogger(__name__)

PUSH_TASK = "supabase_sync.push"
ERROR_MAX_CHARS = 1000
# A message handled a little before the row's due time (clocks differ) still runs.
DUE_TOLERANCE_SECONDS = 5
# Longest retry delay sent as a Celery countdown (a countdown message waits unacknowledged in
# a worker's memory); longer ones are left to the drain, which sends them when due.
COUNTDOWN_MAX_SECONDS = 900
# Events the drain sends per run.
DRAIN_BATCH = 500
# A due event whose message was sent this long ago and has not run is sent again.
DRAIN_OVERDUE_SECONDS = 60


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
    try:
        current_app.send_task(
            PUSH_TASK,
            args=[event_id],
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        )
    except Exception:
        logger.warning(
            "broker unavailable; Supabase sync event %s waits for the drain", event_id,
            exc_info=True,
        )  # fmt: skip
        SyncEvent.objects.filter(pk=event_id).update(enqueued_at=None)
        return False
    return True


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
        if event is None or event.next_attempt_at is None:
            return None
        if event.next_attempt_at > now + timedelta(seconds=DUE_TOLERANCE_SECONDS):
            return None
        if event.locked_until is not None and event.locked_until > now:
            return None
        if SyncEvent.objects.filter(job_id=event.job_id, pk__gt=event.pk).exists():
            _finish(event, SyncState.SUPERSEDED)
            return None
        event.attempts += 1
        # Past every request's timeout and the task's time limit: a worker that died holding
        # it lets the drain push it again after this.
        event.locked_until = now + timedelta(
            seconds=5 * settings.SUPABASE_SYNC_TIMEOUT_SECONDS + 30
        )
        event.save(update_fields=["attempts", "locked_until", "updated_at"])
        return event


def _finish(event: SyncEvent, state: str, *, error: str = "") -> None:
    event.state = state
    event.last_error = error[:ERROR_MAX_CHARS]
    event.next_attempt_at = None
    event.locked_until = None
    if state == SyncState.SYNCED:
        event.synced_at = timezone.now()
    event.save()


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
    now = timezone.now()
    countdown = delay <= COUNTDOWN_MAX_SECONDS
    event.last_error = error[:ERROR_MAX_CHARS]
    event.next_attempt_at = now + timedelta(seconds=delay)
    event.enqueued_at = now if countdown else None
    event.locked_until = None
    event.save()
    logger.info(
        "supabase sync event %s of job %s: attempt %d failed (%s); next in %.0f s",
        event.pk, event.job_id, event.attempts, error, delay,
    )  # fmt: skip
    if countdown:
        event_send_message(event_id=event.pk, countdown=delay)


# --- The drain (beat) and retry (admin) ------------------------------------------------------


def events_drain_due() -> dict[str, int]:
    """Send the message of every pending event that is due and has none on its way: the long
    retry delays, and the messages a broker outage or a lost message left behind."""
    now = timezone.now()
    overdue = now - timedelta(seconds=DRAIN_OVERDUE_SECONDS)
    due = (
        SyncEvent.objects.filter(state=SyncState.PENDING, next_attempt_at__lte=now)
        .filter(
            Q(enqueued_at__isnull=True) | Q(next_attempt_at__lte=overdue, enqueued_at__lte=overdue)
        )
        .exclude(locked_until__gt=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:DRAIN_BATCH]
    )
    sent = 0
    for event_id in list(due):
        SyncEvent.objects.filter(pk=event_id).update(enqueued_at=now)
        if not event_send_message(event_id=event_id):
            break
        sent += 1
    if sent:
        logger.info("supabase sync drain: sent %d due events", sent)
    return {"sent": sent}


def event_retry(*, event: SyncEvent) -> SyncEvent:
    """Push an event again now (an operator's action), its retry schedule started over."""
    with transaction.atomic():
        event = SyncEvent.objects.select_for_update().get(pk=event.pk)
        if event.state == SyncState.PENDING and event.attempts == 0:
            return event
        now = timezone.now()
        event.state = SyncState.PENDING
        event.attempts = 0
        event.next_attempt_at = now
        event.enqueued_at = now
        event.locked_until = None
        event.synced_at = None
        event.save()
        event_id = event.pk
        transaction.on_commit(lambda: event_send_message(event_id=event_id))
    return event
