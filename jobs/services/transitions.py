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

import functools
import uuid
from contextlib import nullcontext
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
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


def _field(name: str) -> Any:
    return Job._meta.get_field(name)


@functools.lru_cache(maxsize=64)
def _row_update_sql(
    vendor: str, changes: tuple[str, ...], where: tuple[tuple[str, bool], ...]
) -> str:
    """The UPDATE of job_row_update for these field names (built once per shape)."""
    quote = connection.ops.quote_name
    meta = Job._meta
    pk: Any = meta.pk
    sets = [f"{quote(str(_field(name).column))} = %s" for name in changes]
    conditions = [f"{quote(str(pk.column))} = %s"]
    for name, is_null in where:
        column = quote(str(_field(name).column))
        conditions.append(f"{column} IS NULL" if is_null else f"{column} = %s")
    return f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} WHERE {' AND '.join(conditions)}"


def job_row_update(job_id: Any, changes: dict[str, Any], **where: Any) -> int:
    """``Job.objects.filter(pk=job_id, **where).update(**changes)`` for plain values and
    equality conditions, as SQL built without the ORM's query compiler (the hot path of a
    job makes several of these: each compiled ORM statement cost ~0.3-0.5 ms of CPU).
    Returns the number of rows written."""
    meta = Job._meta
    pk: Any = meta.pk
    params = [_field(name).get_db_prep_save(value, connection) for name, value in changes.items()]
    params.append(pk.get_db_prep_value(job_id, connection))
    params += [
        _field(name).get_db_prep_value(value, connection)
        for name, value in where.items()
        if value is not None
    ]
    sql = _row_update_sql(
        connection.vendor,
        tuple(changes),
        tuple((name, value is None) for name, value in where.items()),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def in_transaction() -> bool:
    return transaction.get_connection().in_atomic_block


def _own_transaction(previous: JobStatus | None, to: JobStatus) -> bool:
    """Whether a move that is one UPDATE still needs a transaction of its own: when
    ``job_status_changing`` receivers write an outbox row that must commit with the move
    (the Supabase sync, when it is on)."""
    return previous != to and bool(getattr(settings, "SUPABASE_SYNC_TABLES", None))


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

    # The write is one UPDATE: alone (autocommitted) it needs no BEGIN/COMMIT of its own, and
    # what follows it (the event, the signals) runs once it is committed, as after a
    # transaction. Inside the caller's transaction, no savepoint: a lost claim aborts it.
    atomic = in_transaction() or _own_transaction(previous, to)
    with transaction.atomic(savepoint=False) if atomic else nullcontext():
        where: dict[str, Any] = {"status": str(previous)}
        if token is not None:
            where["claim_token"] = token
        if not job_row_update(job.pk, changes, **where):
            if token is not None:
                raise lost_claim_error(job.pk, token)
            raise StaleTransition(f"job {job.pk} is no longer {previous}")
        for name, value in changes.items():
            setattr(job, name, value)
        _after_move(job, previous, to)


def _after_move(job: Job, previous: JobStatus, to: JobStatus) -> None:
    """What every move does once its row is written (in its transaction, if any): the live
    event, the metrics and the signals."""
    publish_job_event(job)
    if to in FINISHED_STATUSES:
        metrics.record_job_finished(
            kind=job.kind, status=to, created_at=job.created_at, finished_at=job.finished_at
        )
        signals.send_after_commit(signals.job_finished, job_id=str(job.pk), status=str(to))
    if to != previous:
        signals.send_in_transaction(signals.job_status_changing, job=job, previous_status=previous)
        signals.send_after_commit(
            signals.job_status_changed,
            job_id=str(job.pk),
            status=str(to),
            previous_status=str(previous),
        )


# The claim as one statement (PostgreSQL): the row is locked and read as it is (the FROM
# subquery's FOR UPDATE gives the latest version, so ``prev`` is the status moved from), the
# move applies only when the claim's conditions hold on that version, and RETURNING gives the
# job as it now is with its owner's username (for the storage paths).
_CLAIM_SQL = """
UPDATE {job} AS j SET
    status = %(active)s, updated_at = %(now)s, claim_token = %(token)s, heartbeat_at = %(now)s,
    attempts_made = j.attempts_made + 1, processed_at = %(now)s, retry_at = NULL,
    progress = CASE WHEN j.kind = %(progress_kind)s
        THEN GREATEST(j.progress, %(claimed_progress)s) ELSE j.progress END,
    stalled_count = j.stalled_count + CASE WHEN j.status = %(active)s THEN 1 ELSE 0 END
FROM (
    SELECT p.id, p.status, u.{username} AS owner_username
    FROM {job} AS p LEFT JOIN {user} AS u ON u.{user_pk} = p.owner_id
    WHERE p.id = %(id)s FOR UPDATE OF p
) AS prev
WHERE j.id = prev.id AND (
    j.status = %(waiting)s
    OR (j.status = %(delayed)s AND (j.retry_at IS NULL OR j.retry_at <= %(due_by)s))
    OR (j.status = %(active)s AND (j.heartbeat_at IS NULL OR j.heartbeat_at <= %(stale_by)s)
        AND j.stalled_count < %(max_stalled)s)
)
RETURNING {columns}, prev.status AS previous_status, prev.owner_username
"""


@functools.cache
def _claim_sql(vendor: str) -> str:
    """_CLAIM_SQL with the names of this project's tables (built once per process)."""
    user_model = get_user_model()
    quote = connection.ops.quote_name
    username_field: Any = user_model._meta.get_field(user_model.USERNAME_FIELD)
    user_pk: Any = user_model._meta.pk
    return _CLAIM_SQL.format(
        job=quote(Job._meta.db_table),
        user=quote(user_model._meta.db_table),
        user_pk=quote(str(user_pk.column)),
        username=quote(str(username_field.column)),
        columns=", ".join(f"j.{quote(str(f.column))}" for f in Job._meta.concrete_fields),
    )


def job_claim_move(
    job_id: str,
    *,
    token: uuid.UUID,
    now: Any,
    due_by: Any,
    stale_by: Any,
    max_stalled: int,
    progress_kind: str,
    claimed_progress: int,
) -> Job | None:
    """The claim's move into active (waiting -> active, a due delayed -> active, a stalled
    active -> active) as ONE statement, for the common case: the job as it now is (owner
    with its username loaded), or None when it was not claimable as is (missing, finished,
    held, not due, stalled too often) or the database is not PostgreSQL: then the caller
    decides under the row lock (lease.job_claim). The move writes what job_transition's
    would (claim token, heartbeat, attempts, processed_at, retry_at cleared, progress and
    stall count) and does what it does after the write (event, signals)."""
    if connection.vendor != "postgresql":
        return None
    user_model = get_user_model()
    sql = _claim_sql(connection.vendor)
    params = {
        "id": job_id, "token": token, "now": now, "due_by": due_by, "stale_by": stale_by,
        "max_stalled": max_stalled, "progress_kind": str(progress_kind),
        "claimed_progress": claimed_progress, "active": str(ACTIVE), "waiting": str(WAITING),
        "delayed": str(DELAYED),
    }  # fmt: skip
    with transaction.atomic() if _own_transaction(None, ACTIVE) else nullcontext():
        found = list(Job.objects.raw(sql, params))
        if not found:
            return None
        job = found[0]
        previous = JobStatus(job.previous_status)  # type: ignore[attr-defined]
        username = job.owner_username  # type: ignore[attr-defined]
        del job.previous_status, job.owner_username  # type: ignore[attr-defined]
        if job.owner_id is not None:
            owner = user_model.from_db(
                connection.alias,
                [user_model._meta.pk.attname, user_model.USERNAME_FIELD],
                [job.owner_id, username],
            )
            job.owner = owner
        _after_move(job, previous, ACTIVE)
    return job


def job_created(job: Job) -> None:
    """A new job row (status waiting) was inserted: tell the stats streams and the state
    mirrors, after the commit."""
    publish_job_event(job, to_job_channel=False)
    metrics.record_job_submitted(kind=job.kind)
    signals.send_in_transaction(signals.job_status_changing, job=job, previous_status=None)
    signals.send_after_commit(
        signals.job_status_changed, job_id=str(job.pk), status=str(job.status), previous_status=None
    )
