"""The outbox both webhook deliveries and Supabase sync events are: a row per thing to send,
the truth about it, and Celery messages that only say "attempt row X now".

An attempt claims its row (so a duplicate or stale message does nothing); a failure
schedules the next attempt with a countdown (short delays) or leaves it to the drain (long
ones, and any message the broker lost), which beat runs; an operator starts a row over.
What is sent, and how, is the feature's: this module keeps only the bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)

ERROR_MAX_CHARS = 1000
# A message may be handled a little before the row's due time when the sender's and the
# worker's clocks differ; earlier than this it is a stale duplicate and does nothing.
DUE_TOLERANCE_SECONDS = 5
# Longest retry delay sent as a Celery countdown. A countdown message waits unacknowledged
# in a worker's memory, and Redis gives it to another worker after the visibility timeout
# (1 h): longer delays are left to the drain, which sends the message when it is due.
COUNTDOWN_MAX_SECONDS = 900
# Rows the drain sends per run.
DRAIN_BATCH = 500
# A due row whose message was sent this long ago and has not run is sent again.
DRAIN_OVERDUE_SECONDS = 60


class OutboxRecord(models.Model):
    """The delivery bookkeeping of an outbox row (its state field is the feature's)."""

    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    # When the next attempt is due (None once the row has ended).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the message for the next attempt was sent (None: not sent, the drain will).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # An attempt in flight holds the row until then, so a duplicate message waits.
    locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


@dataclass(frozen=True)
class Outbox:
    """One feature's outbox: its model, the field and values of its state, its task."""

    model: type[OutboxRecord]
    state_field: str
    pending: str
    succeeded: str
    # Set when the row succeeds, cleared when it starts over.
    succeeded_at_field: str
    task: str
    # What the task's message carries: the row's primary key as the task takes it.
    message_id: Callable[[Any], Any]
    # "broker unavailable; <what> %s waits for the drain"
    broker_down_log: str

    def rows(self) -> Any:
        return self.model._default_manager


def send_message(outbox: Outbox, record_id: Any, *, countdown: float | None = None) -> bool:
    """Send the Celery message of an attempt. A broker outage is logged, not raised: the row
    says it is due, and the drain sends it once the broker is back."""
    try:
        current_app.send_task(
            outbox.task,
            args=[record_id],
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        )
    except Exception:
        logger.warning(outbox.broker_down_log, record_id, exc_info=True)
        outbox.rows().filter(pk=record_id).update(enqueued_at=None)
        return False
    return True


def claimable(record: OutboxRecord, *, now: datetime) -> bool:
    """Whether a pending row (read locked) is due and not held by another attempt; not: the
    message is a duplicate or stale one, and does nothing."""
    if record.next_attempt_at is None:
        return False
    if record.next_attempt_at > now + timedelta(seconds=DUE_TOLERANCE_SECONDS):
        return False
    return record.locked_until is None or record.locked_until <= now


def hold(record: OutboxRecord, *, now: datetime, seconds: float) -> None:
    """Count an attempt and hold the row for it until ``seconds`` from ``now``: past the
    attempt's timeouts and its task's time limit, so a worker that died holding it lets the
    drain send it again after that."""
    record.attempts += 1
    record.locked_until = now + timedelta(seconds=seconds)
    record.save(update_fields=["attempts", "locked_until", "updated_at"])


def finish(outbox: Outbox, record: Any, state: str, *, error: str = "") -> None:
    setattr(record, outbox.state_field, state)
    record.last_error = error[:ERROR_MAX_CHARS]
    record.next_attempt_at = None
    record.locked_until = None
    if state == outbox.succeeded:
        setattr(record, outbox.succeeded_at_field, timezone.now())
    record.save()


def retry_later(outbox: Outbox, record: Any, *, error: str, delay: float) -> None:
    """Record a failed attempt whose next one is due in ``delay`` seconds: sent now with a
    countdown when the delay is short, left to the drain otherwise."""
    now = timezone.now()
    countdown = delay <= COUNTDOWN_MAX_SECONDS
    record.last_error = error[:ERROR_MAX_CHARS]
    record.next_attempt_at = now + timedelta(seconds=delay)
    record.enqueued_at = now if countdown else None
    record.locked_until = None
    record.save()
    if countdown:
        send_message(outbox, outbox.message_id(record.pk), countdown=delay)


def drain_due(outbox: Outbox) -> int:
    """Send the message of every pending row that is due and has none on its way: the long
    retry delays, and the messages a broker outage or a lost message left behind. Returns
    how many were sent."""
    now = timezone.now()
    overdue = now - timedelta(seconds=DRAIN_OVERDUE_SECONDS)
    due = (
        outbox.rows()
        .filter(**{outbox.state_field: outbox.pending}, next_attempt_at__lte=now)
        .filter(
            Q(enqueued_at__isnull=True) | Q(next_attempt_at__lte=overdue, enqueued_at__lte=overdue)
        )
        .exclude(locked_until__gt=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:DRAIN_BATCH]
    )
    sent = 0
    for record_id in list(due):
        outbox.rows().filter(pk=record_id).update(enqueued_at=now)
        if not send_message(outbox, outbox.message_id(record_id)):
            break
        sent += 1
    return sent


def start_over(outbox: Outbox, record: Any) -> Any:
    """Attempt a row again now, its retry schedule started over (an operator's action).
    Call it inside a transaction with the row locked; a row already waiting for its first
    attempt is left as it is."""
    if getattr(record, outbox.state_field) == outbox.pending and record.attempts == 0:
        return record
    now = timezone.now()
    setattr(record, outbox.state_field, outbox.pending)
    record.attempts = 0
    record.next_attempt_at = now
    record.enqueued_at = now
    record.locked_until = None
    setattr(record, outbox.succeeded_at_field, None)
    record.save()
    record_id = outbox.message_id(record.pk)
    transaction.on_commit(lambda: send_message(outbox, record_id))
    return record
