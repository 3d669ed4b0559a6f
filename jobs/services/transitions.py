"""Every change of a job's status goes through ``job_transition``, against ``LEGAL_MOVES``.

The table below is the job's state machine (docs/guarantees.md draws it); a move that is not
in it is a bug and raises ``IllegalTransition``. The write is one conditional UPDATE of the
fields that change, never a full-row save: it applies only while the row still has the status
the caller read (and, for a move made by a running attempt, still holds that attempt's claim
token), so a concurrent cancel, retry, takeover or sweep is never overwritten; a write that
matched no row raises (``LeaseLost``/``JobCancelled`` for a fenced move, ``StaleTransition``
otherwise). After the write it publishes the live event, sends
``jobs.signals.job_status_changing`` inside the transaction (outbox writers) and, once it commits,
records the metrics and sends ``jobs.signals.job_status_changed`` (and ``job_finished`` for a
move into completed, failed or cancelled).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs import metrics, signals
from jobs.live.publish import publish_job_event
from jobs.models import FINISHED_STATUSES, Job, JobStatus
from snapasset.core.exceptions import JobCancelled, LeaseLost

WAITING, ACTIVE, DELAYED = JobStatus.WAITING, JobStatus.ACTIVE, JobStatus.DELAYED
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED

# (from, to): who makes the move. Nothing else writes `status`.
LEGAL_MOVES: dict[tuple[JobStatus, JobStatus], str] = {
    (WAITING, ACTIVE): "claim: a worker takes the job under its row lock (lease.job_claim)",
    (DELAYED, ACTIVE): "claim: the retry of a delayed job is due (lease.job_claim)",
    (ACTIVE, ACTIVE): "takeover: claimed again once its heartbeat stopped, a stall "
    "(lease.job_claim)",
    (ACTIVE, COMPLETED): "complete: every platform recorded (outcomes.job_complete)",
    (ACTIVE, DELAYED): "retry later: a transient error (outcomes.job_schedule_retry), or no "
    "slot yet at the image model's shared rate limit, the attempt given back "
    "(outcomes.job_wait_for_slot)",
    (ACTIVE, FAILED): "fail: a permanent error, attempts used up, or stalled too often "
    "(outcomes.job_fail, outcomes.job_schedule_retry, lease.job_fail_stalled)",
    (ACTIVE, WAITING): "give back: worker shutdown (lease.job_release), more batches to run "
    "(outcomes.job_requeue), or a silent attempt re-queued (sweeper.jobs_sweep)",
    (WAITING, CANCELLED): "cancel before it starts (control.job_cancel)",
    (DELAYED, CANCELLED): "cancel while it waits for its retry (control.job_cancel)",
    (ACTIVE, CANCELLED): "cancel while it runs; the attempt stops at its next step "
    "(control.job_cancel)",
    (FAILED, WAITING): "retry by the user or an operator (control.job_retry)",
    (CANCELLED, WAITING): "retry by the user or an operator (control.job_retry)",
}


class IllegalTransition(Exception):
    """A move the state machine does not have: a bug in the caller."""


class StaleTransition(Exception):
    """The row no longer had the status the caller read (someone else moved it first)."""


def lost_claim_error(job_id: Any, token: uuid.UUID) -> Exception:
    """Why a fenced write of attempt ``token`` matched no row: JobCancelled when the job was
    cancelled while this attempt held it, else LeaseLost (another attempt took it over, or
    the job was released or re-queued)."""
    row = Job.objects.filter(pk=job_id).values("cancel_requested", "claim_token").first()
    if row is not None and row["cancel_requested"] and row["claim_token"] == token:
        return JobCancelled(str(job_id))
    return LeaseLost(str(job_id))


def job_transition(
    job: Job, to: JobStatus, *, token: uuid.UUID | None = None, **fields: Any
) -> None:
    """Move ``job`` from the status it was read with to ``to``, writing only ``fields`` and
    what the move implies, and update ``job`` in memory.

    ``token``: the move is made by the running attempt holding that claim token; it applies
    only while the row still holds it (else LeaseLost or JobCancelled). Without a token the
    caller holds the row lock (or accepts StaleTransition if the row moved meanwhile).
    What a move implies: ``finished_at`` is set on a move into completed/failed/cancelled
    and cleared on a move out of them; the claim token is cleared on a move out of active
    except into cancelled, where the cancelled attempt keeps it to fence its own clean-up
    (a retry clears it).
    """
    previous = JobStatus(job.status)
    to = JobStatus(to)
    if (previous, to) not in LEGAL_MOVES:
        raise IllegalTransition(f"job {job.pk}: {previous} -> {to} is not a legal move")
    now = timezone.now()
    changes: dict[str, Any] = {"status": to, "updated_at": now}
    if to in FINISHED_STATUSES:
        changes["finished_at"] = now
    elif previous in FINISHED_STATUSES:
        changes["finished_at"] = None
    if previous == ACTIVE and to not in (ACTIVE, CANCELLED):
        changes["claim_token"] = None
    if to == ACTIVE and "claim_token" not in fields:
        raise IllegalTransition(f"job {job.pk}: a move into active needs a new claim token")
    changes.update(fields)

    with transaction.atomic(savepoint=False):
        rows = Job.objects.filter(pk=job.pk, status=previous)
        if token is not None:
            rows = rows.filter(claim_token=token)
        if not rows.update(**changes):
            if token is not None:
                raise lost_claim_error(job.pk, token)
            raise StaleTransition(f"job {job.pk} is no longer {previous}")
        for name, value in changes.items():
            setattr(job, name, value)
        publish_job_event(job)
        if to in FINISHED_STATUSES:
            metrics.record_job_finished(
                kind=job.kind, status=to, created_at=job.created_at, finished_at=job.finished_at
            )
            signals.send_after_commit(signals.job_finished, job_id=str(job.pk), status=str(to))
        if to != previous:
            signals.send_in_transaction(
                signals.job_status_changing, job=job, previous_status=previous
            )
            signals.send_after_commit(
                signals.job_status_changed,
                job_id=str(job.pk),
                status=str(to),
                previous_status=str(previous),
            )


def job_created(job: Job) -> None:
    """A new job row (status waiting) was inserted: tell the stats streams and the state
    mirrors, after the commit."""
    publish_job_event(job, to_job_channel=False)
    metrics.record_job_submitted(kind=job.kind)
    signals.send_in_transaction(signals.job_status_changing, job=job, previous_status=None)
    signals.send_after_commit(
        signals.job_status_changed, job_id=str(job.pk), status=str(job.status), previous_status=None
    )
