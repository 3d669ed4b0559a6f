"""Cancel and retry, by the job's owner (the API) or an operator (the admin's actions)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.services.delivery import job_enqueue_on_commit
from jobs.services.submission import check_pending_cap
from jobs.services.transitions import job_transition
from jobs.spend.limiter import provider_limiter
from jobs.spend.quotas import generations_for_retry, quota_check
from snapasset.core.exceptions import InvalidStateError


@transaction.atomic
def job_cancel(*, job: Job) -> Job:
    """Cancel a job. A waiting or delayed job never starts (the claim refuses it, whatever
    messages remain); an active one stops at its next step and removes its partial outputs
    (fenced by its claim token, which the cancel leaves in place until a retry)."""
    job = Job.objects.select_for_update(of=("self",)).select_related("owner").get(pk=job.pk)
    if job.status == JobStatus.CANCELLED:
        return job
    if job.status == JobStatus.COMPLETED:
        raise InvalidStateError("Job is already completed", extra={"status": job.status})
    if job.status == JobStatus.FAILED:
        raise InvalidStateError("Job has already failed", extra={"status": job.status})
    waiting_for_slot = job.status == JobStatus.DELAYED and job.delay_reason == "provider-slot"
    job_transition(job, JobStatus.CANCELLED, cancel_requested=True)
    if waiting_for_slot:
        # Out of the rate limit's line at once: a cancelled job holds no slot for itself.
        job_id = str(job.pk)
        transaction.on_commit(lambda: provider_limiter().forget(job_id))
    return job


@transaction.atomic
def job_retry(*, job: Job, actor: Any | None = None) -> Job:
    """Run a failed or cancelled job again, keeping the outputs and checkpoint it has.

    A non-staff ``actor`` (the API caller) is held to the pending cap, so retrying old
    failures cannot queue more than a new submission could. The retry takes the row lock
    that a cancelled run holds while it removes each of its outputs, and clears the claim
    token that run fences that removal with: what the retried run makes is never removed.
    """
    job = Job.objects.select_for_update(of=("self",)).select_related("owner").get(pk=job.pk)
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise InvalidStateError(
            f"Only failed or cancelled jobs can be retried; this one is {job.status}",
            extra={"status": job.status},
        )
    if actor is not None and not actor.is_staff and job.owner is not None:
        check_pending_cap(job.owner)
        # A retry that will pay again counts against the daily quota (not one whose
        # original is still kept).
        quota_check(job.owner, generations=generations_for_retry(job))
    job_transition(
        job,
        JobStatus.WAITING,
        progress=0,
        attempts_made=0,
        failed_reason="",
        cancel_requested=False,
        claim_token=None,
        heartbeat_at=None,
        stalled_count=0,
        retry_at=None,
        enqueued_at=timezone.now(),
    )
    job_enqueue_on_commit(job)
    return job
