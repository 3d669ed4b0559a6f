"""How an attempt ends: completed, given back for the next batch, delayed for a retry after a
transient error or for its turn at the image model's shared rate limit, or failed. Each is
one move of ``transitions.job_transition``, fenced by the attempt's claim token."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs.models import FINISHED_STATUSES, DelayReason, Job, JobStatus
from jobs.services.delivery import job_enqueue_on_commit
from jobs.services.lease import Claim
from jobs.services.transitions import job_transition
from snapasset.core.log_redaction import redact_secrets

# Longest failure reason kept on the row.
REASON_MAX_LENGTH = 2000


def readable_reason(reason: str) -> str:
    return redact_secrets(reason)[:REASON_MAX_LENGTH]


def job_complete(claim: Claim, *, result: dict[str, Any] | None = None) -> None:
    fields: dict[str, Any] = {"progress": 100, "failed_reason": "", "heartbeat_at": timezone.now()}
    if result is not None:
        fields["result"] = result
    job_transition(claim.job, JobStatus.COMPLETED, token=claim.token, **fields)


def job_requeue(claim: Claim, *, result: dict[str, Any]) -> None:
    """Give the job back to the queue to continue in a later run (batched work)."""
    job_transition(
        claim.job, JobStatus.WAITING, token=claim.token, result=result, enqueued_at=timezone.now()
    )
    job_enqueue_on_commit(claim.job)


def job_fail(*, job_id: str, token: uuid.UUID | None, reason: str) -> None:
    """Mark the job failed with a readable reason, if attempt ``token`` still holds it
    (None: an active job no attempt holds)."""
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",))
            .filter(pk=job_id, claim_token=token, status=JobStatus.ACTIVE)
            .first()
        )
        if job is None:
            return
        job_transition(job, JobStatus.FAILED, token=token, failed_reason=readable_reason(reason))


def retry_countdown(*, attempts_made: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, never sooner than the server's Retry-After."""
    base = settings.JOB_RETRY_BACKOFF_SECONDS * (2 ** max(0, attempts_made - 1))
    countdown = random.uniform(base / 2, base)
    if retry_after:
        countdown = max(countdown, retry_after)
    return min(countdown, settings.JOB_RETRY_BACKOFF_MAX_SECONDS)


def job_schedule_retry(
    *, job_id: str, token: uuid.UUID, reason: str, retry_after: float | None
) -> float | None:
    """After a transient error: mark the job delayed and return the countdown, or fail it
    (and return None) when its attempts are used up."""
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",)).filter(pk=job_id, claim_token=token).first()
        )
        if job is None or job.status in FINISHED_STATUSES or job.status != JobStatus.ACTIVE:
            return None
        if job.attempts_made >= settings.JOB_MAX_ATTEMPTS:
            reason = f"Gave up after {job.attempts_made} attempts: {reason}"
            job_transition(
                job, JobStatus.FAILED, token=token, failed_reason=readable_reason(reason)
            )
            return None
        countdown = retry_countdown(attempts_made=job.attempts_made, retry_after=retry_after)
        now = timezone.now()
        job_transition(
            job,
            JobStatus.DELAYED,
            token=token,
            failed_reason=readable_reason(reason),
            retry_at=now + timedelta(seconds=countdown),
            delay_reason=DelayReason.RETRY,
            enqueued_at=now,
        )
        return countdown


def job_wait_for_slot(claim: Claim, *, seconds: float) -> float | None:
    """The shared rate limit has no slot for this job's paid call yet: the job is delayed
    until its turn, and the attempt is given back (not counted in attempts_made, so waiting
    never brings a job nearer to failing). Returns the countdown for the wake-up message
    (the task sends it; no worker process waits meanwhile), or None if this attempt no
    longer holds the job."""
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",))
            .filter(pk=claim.job.pk, claim_token=claim.token, status=JobStatus.ACTIVE)
            .first()
        )
        if job is None:
            return None
        now = timezone.now()
        job_transition(
            job,
            JobStatus.DELAYED,
            token=claim.token,
            attempts_made=max(0, job.attempts_made - 1),
            retry_at=now + timedelta(seconds=seconds),
            delay_reason=DelayReason.PROVIDER_SLOT,
            enqueued_at=now,
        )
    return seconds
