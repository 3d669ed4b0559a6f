"""The lease of a running attempt: the claim under a row lock, its fencing token, the
heartbeat that keeps it, and giving the job back on shutdown.

A worker claims a job under a row lock and gets a fencing token (``claim_token``); every
later write of that attempt is conditional on the token (``fenced_update``, and the
transitions it makes), so a duplicate delivery or a stale worker cannot overwrite a newer
attempt. The heartbeat thread refreshes ``heartbeat_at`` while a long step runs; another
delivery may take over a job silent for JOB_LEASE_SECONDS, the sweeper one silent for twice
that.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from jobs.live.publish import publish_job_event
from jobs.models import FINISHED_STATUSES, Job, JobKind, JobStatus
from jobs.services.delivery import job_enqueue_on_commit
from jobs.services.transitions import (
    in_transaction,
    job_claim_move,
    job_row_update,
    job_transition,
    lost_claim_error,
)
from jobs.shutdown import worker_is_shutting_down, worker_shutdown_started_at
from snapasset.core.exceptions import JobCancelled, LeaseLost

logger = logging.getLogger(__name__)

# The first progress milestone of an image job: claimed.
PROGRESS_CLAIMED = 5


class WorkerShuttingDown(Exception):
    """Raised between steps when the worker got SIGTERM: the job goes back to the queue."""


@dataclass(frozen=True)
class Claim:
    job: Job
    token: uuid.UUID
    # The image rows this attempt recorded, in order (the final event is built from them
    # when they are all of the job's platforms, instead of reading them back).
    recorded: list[Any] = field(default_factory=list, compare=False)


def job_claim(*, job_id: str) -> Claim | None:
    """Take the job for this attempt, or None when there is nothing to do.

    Under a row lock: a finished job, a job another attempt holds with a live heartbeat,
    or a delayed job whose retry is not due are left alone (a duplicate or early message).
    A cancelled-before-start job stays cancelled and never runs. An active job whose
    heartbeat stopped is taken over (a stall), at most JOB_MAX_STALLED_COUNT times.
    """
    now = timezone.now()
    token = uuid.uuid4()
    # The common case is one statement (no BEGIN, SELECT FOR UPDATE, UPDATE, COMMIT); when it
    # claims nothing, the cases below decide under the row lock (and claim, if the row
    # became claimable meanwhile).
    claimed = job_claim_move(
        job_id,
        token=token,
        now=now,
        due_by=now + timedelta(seconds=1),
        stale_by=now - timedelta(seconds=settings.JOB_LEASE_SECONDS),
        max_stalled=settings.JOB_MAX_STALLED_COUNT,
        progress_kind=JobKind.IMAGE_GENERATION,
        claimed_progress=PROGRESS_CLAIMED,
    )
    if claimed is not None:
        return Claim(job=claimed, token=token)
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",))
            .select_related("owner")
            .filter(pk=job_id)
            .first()
        )
        if job is None or job.status in FINISHED_STATUSES:
            return None
        if (
            job.status == JobStatus.ACTIVE
            and job.heartbeat_at
            and (now - job.heartbeat_at < timedelta(seconds=settings.JOB_LEASE_SECONDS))
        ):
            return None
        if (
            job.status == JobStatus.DELAYED
            and job.retry_at
            and job.retry_at > now + timedelta(seconds=1)
        ):
            return None
        stalled_count = job.stalled_count
        if job.status == JobStatus.ACTIVE:
            # Held by an attempt whose heartbeat stopped (its worker died and the message
            # came back): taking it over is a stall recovery and counts like the sweeper's.
            if job.stalled_count >= settings.JOB_MAX_STALLED_COUNT:
                job_fail_stalled(job)
                return None
            stalled_count += 1
        progress = job.progress
        if job.kind == JobKind.IMAGE_GENERATION:
            progress = max(job.progress, PROGRESS_CLAIMED)
        job_transition(
            job,
            JobStatus.ACTIVE,
            claim_token=token,
            heartbeat_at=now,
            attempts_made=job.attempts_made + 1,
            processed_at=now,
            retry_at=None,
            progress=progress,
            stalled_count=stalled_count,
        )
    return Claim(job=job, token=token)


def job_fail_stalled(job: Job) -> None:
    """Fail an active job (locked by the caller) whose attempts kept stopping responding."""
    job_transition(
        job,
        JobStatus.FAILED,
        failed_reason=(
            f"Job stalled {job.stalled_count + 1} times (its worker stopped responding); "
            f"gave up after {job.stalled_count} re-runs"
        ),
    )


def job_lease_remaining(*, job_id: str) -> float | None:
    """Seconds until the lease of the attempt holding an active job runs out (plus a
    margin), or None when the job is not held."""
    row = Job.objects.filter(pk=job_id, status=JobStatus.ACTIVE).values("heartbeat_at").first()
    if row is None or row["heartbeat_at"] is None:
        return None
    expires = row["heartbeat_at"] + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    return max(0.0, (expires - timezone.now()).total_seconds()) + 1.0


def fenced_update(claim: Claim, **fields: Any) -> None:
    """Write fields (never ``status``: see transitions) of the claimed job, or raise
    LeaseLost if another attempt took over or JobCancelled if the job was cancelled
    meanwhile (a stale worker never overwrites a newer attempt)."""
    assert "status" not in fields, "status moves go through job_transition"
    fields.setdefault("heartbeat_at", timezone.now())
    fields["updated_at"] = timezone.now()
    # One UPDATE: autocommitted when alone (no BEGIN/COMMIT; the event goes once it is
    # committed). No savepoint inside a caller's transaction: a lost claim aborts it.
    with transaction.atomic(savepoint=False) if in_transaction() else nullcontext():
        updated = job_row_update(
            claim.job.pk, fields, claim_token=claim.token, status=str(JobStatus.ACTIVE)
        )
        if not updated:
            raise lost_claim_error(claim.job.pk, claim.token)
        for name, value in fields.items():
            setattr(claim.job, name, value)
        publish_job_event(claim.job)


def job_set_progress(claim: Claim, progress: int) -> None:
    fenced_update(claim, progress=max(claim.job.progress, min(100, progress)))


def check_not_cancelled(claim: Claim) -> None:
    """Called between steps: a cancel request stops the pipeline before any further work."""
    row = Job.objects.filter(pk=claim.job.pk).values("cancel_requested", "claim_token").first()
    if row is None or row["cancel_requested"]:
        raise JobCancelled(str(claim.job.pk))
    if row["claim_token"] != claim.token:
        raise LeaseLost(str(claim.job.pk))


def between_steps(claim: Claim) -> None:
    """Before each step: stop for a cancel, a lost claim or a worker shutdown."""
    check_not_cancelled(claim)
    if worker_is_shutting_down():
        raise WorkerShuttingDown(str(claim.job.pk))


@contextmanager
def job_heartbeat(claim: Claim) -> Iterator[None]:
    """Refresh the claim's heartbeat on a thread while a long step (a provider call) runs,
    so the sweeper does not take a slow job for a dead one.

    A database error in a tick (a dropped connection, a pool timeout, a failover) is logged
    and the next tick tries again on a fresh connection: the thread ends only when the step
    does, or when the attempt no longer holds the job.
    """
    stop = threading.Event()
    # Ticks of at most 1 s so that the end of a shutdown grace period is seen in time.
    tick = min(1.0, float(settings.JOB_HEARTBEAT_SECONDS))

    def beat_once(last_beat: float) -> tuple[float, bool]:
        """One tick: (time of the last successful heartbeat, whether to keep going)."""
        if shutdown_grace_over():
            # SIGTERM came and the current step is still running: give the job back now,
            # so that it is not left `active` when the worker is killed; this attempt's
            # later writes are fenced off.
            job_release(claim, reason="its step outlived the shutdown grace period")
            return last_beat, False
        if time.monotonic() - last_beat < settings.JOB_HEARTBEAT_SECONDS:
            return last_beat, True
        held = Job.objects.filter(
            pk=claim.job.pk, claim_token=claim.token, status=JobStatus.ACTIVE
        ).update(heartbeat_at=timezone.now())
        return time.monotonic(), bool(held)

    def beat() -> None:
        last_beat = time.monotonic()
        try:
            while not stop.wait(tick):
                try:
                    last_beat, going = beat_once(last_beat)
                except Exception:
                    logger.warning(
                        "job %s: heartbeat failed; trying again next tick",
                        claim.job.pk,
                        exc_info=True,
                    )
                    # A broken connection is replaced on the next query.
                    close_old_connections()
                    connections["default"].close_if_unusable_or_obsolete()
                    continue
                if not going:
                    return
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, name=f"heartbeat-{claim.job.pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def shutdown_grace_over() -> bool:
    started = worker_shutdown_started_at()
    return started is not None and time.time() - started >= settings.JOB_SHUTDOWN_GRACE_SECONDS


def job_release(claim: Claim, *, reason: str) -> bool:
    """Give a claimed job back to the queue untouched by this attempt (worker shutdown):
    waiting again, its message sent again, the attempt not counted. False if this attempt
    no longer holds it."""
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",))
            .select_related("owner")
            .filter(pk=claim.job.pk, claim_token=claim.token, status=JobStatus.ACTIVE)
            .first()
        )
        if job is None:
            return False
        job_transition(
            job,
            JobStatus.WAITING,
            heartbeat_at=None,
            attempts_made=max(0, job.attempts_made - 1),
            enqueued_at=timezone.now(),
        )
        job_enqueue_on_commit(job)
    logger.info("job %s released to the queue: %s", job.pk, reason)
    return True
