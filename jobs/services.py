"""Writes to jobs: submission, state changes, the generation pipeline, retry and cancel.

The ``Job`` row is the truth. Celery messages only say "look at job X"; every step here is
safe to repeat: a worker claims the job under a row lock and gets a fencing token
(``claim_token``), every later write of that attempt is conditional on the token, outputs
have deterministic storage paths and one ``GeneratedImage`` row per platform, and the
generated original is kept as a checkpoint so that no retry pays the image model twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db import IntegrityError, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs import broker, metrics, signals
from jobs.live.publish import publish_job_event
from jobs.models import (
    FINISHED_STATUSES,
    PENDING_STATUSES,
    TASK_FOR_KIND,
    GeneratedImage,
    Job,
    JobKind,
    JobStatus,
)
from jobs.pipeline import (
    CONTENT_TYPES,
    EXTENSIONS,
    RenderedImage,
    decode_image,
    inspect_image,
    render_platforms,
)
from jobs.platforms import PLATFORM_IDS, PLATFORMS
from jobs.providers import get_provider
from jobs.shutdown import worker_is_shutting_down, worker_shutdown_started_at
from jobs.storage import file_with_content_type, recordable_url
from jobs.webhooks import services as webhooks
from snapasset.core.exceptions import (
    ApplicationError,
    InvalidStateError,
    JobCancelled,
    LeaseLost,
    PermanentError,
    PermissionDeniedError,
    TooManyPendingJobsError,
    TransientError,
)
from snapasset.core.log_redaction import redact_secrets, truncate_prompt

logger = logging.getLogger(__name__)

# Progress milestones of an image job: claimed, original ready, then the platforms share
# the rest evenly.
PROGRESS_CLAIMED = 5
PROGRESS_SOURCE_READY = 30
# Jobs looked at per sweep; the sweeper runs every minute, so a backlog drains over runs.
SWEEP_BATCH = 500
# Storing the freshly generated original is retried in place (0.5 s, 1 s) before the job
# is given up to a later attempt: until it is stored, a retry would pay the model again.
CHECKPOINT_SAVE_ATTEMPTS = 3
CHECKPOINT_RETRY_MAX_SLEEP_SECONDS = 5.0
# The sweeper reads the queued messages to resend only the missing ones. A backlog longer
# than this (about 75 MB of messages) is not read and nothing is resent that run: a queue
# that long was clearly not lost, and reading it every minute would cost more than the
# duplicates it avoids.
SWEEP_SCAN_LIMIT = 50_000
# The pause before the sweeper's second look (see jobs_sweep).
SWEEP_RECHECK_SECONDS = 0.5


class WorkerShuttingDown(Exception):
    """Raised between steps when the worker got SIGTERM: the job goes back to the queue."""


# --- Submission ---------------------------------------------------------------------------


def _resolve_owner(*, actor: Any, user_id: str | None) -> Any:
    """The job's owner: the caller, or for staff the user named by ``userId``."""
    if not user_id or user_id in {actor.get_username(), str(actor.pk)}:
        return actor
    if not actor.is_staff:
        raise PermissionDeniedError(
            "userId does not match your credentials; jobs belong to the authenticated user",
            extra={"details": {"userId": ["Only staff may submit for another user."]}},
        ) from None
    user_model = get_user_model()
    owner = user_model.objects.filter(**{user_model.USERNAME_FIELD: user_id}).first()
    if owner is None and user_id.isdigit():
        owner = user_model.objects.filter(pk=int(user_id)).first()
    if owner is None:
        raise ApplicationError(
            "Unknown userId", extra={"details": {"userId": [f"No user {user_id!r}."]}}
        )
    return owner


def _check_pending_cap(owner: Any) -> None:
    """TooManyPendingJobsError when the owner already has the most jobs waiting or running."""
    # The owner's row lock makes concurrent submissions of one user count one at a time,
    # so together they cannot go past the cap.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
    pending = Job.objects.filter(owner=owner, status__in=PENDING_STATUSES).count()
    if pending >= settings.JOB_MAX_PENDING_PER_USER:
        raise TooManyPendingJobsError(
            f"You have {pending} jobs waiting or running (limit "
            f"{settings.JOB_MAX_PENDING_PER_USER}); wait for some to finish"
        )


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool


def job_create_generation(
    *,
    actor: Any,
    prompt: str,
    platforms: list[str] | None = None,
    image_type: str = "vivid",
    output_format: str = "png",
    priority: int = 0,
    user_id: str | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
) -> Submission:
    """Insert a waiting image job and enqueue it after commit.

    With an ``idempotency_key`` seen from the same owner within 24 h, the first job is
    returned instead (``created=False``); the same key for a different request is a 400.
    One transaction: the owner's row lock taken by the pending-jobs cap holds until the
    INSERT commits, so concurrent submissions of one user cannot go past the cap.
    """
    if callback_url:  # resolves its host: before the transaction and its lock
        webhooks.callback_url_check(callback_url)
    with transaction.atomic():
        return _job_insert_generation(
            actor=actor, prompt=prompt, platforms=platforms, image_type=image_type,
            output_format=output_format, priority=priority, user_id=user_id,
            idempotency_key=idempotency_key, callback_url=callback_url,
        )  # fmt: skip


def _job_insert_generation(
    *,
    actor: Any,
    prompt: str,
    platforms: list[str] | None,
    image_type: str,
    output_format: str,
    priority: int,
    user_id: str | None,
    idempotency_key: str | None,
    callback_url: str | None,
) -> Submission:
    owner = _resolve_owner(actor=actor, user_id=user_id)
    platforms = list(platforms or PLATFORM_IDS)
    fields = {
        "prompt": prompt,
        "platforms": platforms,
        "image_type": image_type,
        "output_format": output_format,
        "priority": priority,
    }
    if idempotency_key:
        existing = _job_for_idempotency_key(owner=owner, key=idempotency_key)
        if existing is not None:
            return _idempotent_replay(existing, fields)

    _check_pending_cap(owner)
    try:
        # The savepoint is only needed to survive a duplicate idempotency key.
        with transaction.atomic() if idempotency_key else nullcontext():
            job = Job.objects.create(
                owner=owner,
                kind=JobKind.IMAGE_GENERATION,
                idempotency_key=idempotency_key or None,
                enqueued_at=timezone.now(),
                **fields,
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won the insert: answer with its job.
        existing = _job_for_idempotency_key(owner=owner, key=idempotency_key or "")
        if existing is None:
            raise
        return _idempotent_replay(existing, fields)
    if callback_url:
        webhooks.job_callback_create(job=job, url=callback_url)
    job_enqueue_on_commit(job)
    publish_job_event(job, to_job_channel=False)
    metrics.record_job_submitted(kind=job.kind)
    return Submission(job=job, created=True)


def _job_for_idempotency_key(*, owner: Any, key: str) -> Job | None:
    job = Job.objects.filter(owner=owner, idempotency_key=key).first()
    if job is None:
        return None
    if job.created_at < timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS):
        # The key expired: free it for the new request.
        Job.objects.filter(pk=job.pk).update(idempotency_key=None)
        return None
    return job


def _idempotent_replay(job: Job, fields: dict[str, Any]) -> Submission:
    mismatched = [name for name, value in fields.items() if getattr(job, name) != value]
    if mismatched:
        raise ApplicationError(
            "Idempotency-Key was already used for a different request",
            extra={"details": {"Idempotency-Key": [f"Differs in: {', '.join(mismatched)}."]}},
        )
    return Submission(job=job, created=False)


# --- Delivery -----------------------------------------------------------------------------


def celery_priority(priority: int) -> int:
    """API priority (higher first, 0..9) to Redis priority (0 is served first)."""
    return 9 - max(0, min(9, priority))


def job_enqueue_on_commit(job: Job) -> None:
    job_id, kind, priority = str(job.id), job.kind, job.priority
    transaction.on_commit(lambda: job_send_message(job_id=job_id, kind=kind, priority=priority))


def job_send_message(
    *, job_id: str, kind: str, priority: int, countdown: float | None = None
) -> bool:
    """Send the Celery message for a job. A broker outage is logged, not raised: the row is
    committed and the sweeper sends the message again once it is overdue."""
    try:
        current_app.send_task(
            TASK_FOR_KIND[JobKind(kind)],
            args=[job_id],
            task_id=job_id,
            priority=celery_priority(priority),
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        )
    except Exception:
        logger.warning(
            "broker unavailable; job %s stays waiting for the sweeper", job_id, exc_info=True
        )
        return False
    return True


# --- Claiming and state changes ------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    job: Job
    token: uuid.UUID


def job_claim(*, job_id: str) -> Claim | None:
    """Take the job for this attempt, or None when there is nothing to do.

    Under a row lock: a finished job, a job another attempt holds with a live heartbeat,
    or a delayed job whose retry is not due are left alone (a duplicate or early message).
    A cancelled-before-start job stays cancelled and never runs.
    """
    now = timezone.now()
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
        if job.status == JobStatus.ACTIVE:
            # Held by an attempt whose heartbeat stopped (its worker died and the message
            # came back): taking it over is a stall recovery and counts like the sweeper's.
            if job.stalled_count >= settings.JOB_MAX_STALLED_COUNT:
                _fail_stalled(job, now)
                return None
            job.stalled_count += 1
        token = uuid.uuid4()
        job.status = JobStatus.ACTIVE
        job.claim_token = token
        job.heartbeat_at = now
        job.attempts_made += 1
        job.processed_at = now
        job.retry_at = None
        job.progress = (
            max(job.progress, PROGRESS_CLAIMED)
            if job.kind == JobKind.IMAGE_GENERATION
            else job.progress
        )
        job.save(
            update_fields=[
                "status", "claim_token", "heartbeat_at", "attempts_made", "processed_at",
                "retry_at", "progress", "stalled_count", "updated_at",
            ]
        )  # fmt: skip
        publish_job_event(job)
    return Claim(job=job, token=token)


def job_lease_remaining(*, job_id: str) -> float | None:
    """Seconds until the lease of the attempt holding an active job runs out (plus a
    margin), or None when the job is not held."""
    row = Job.objects.filter(pk=job_id, status=JobStatus.ACTIVE).values("heartbeat_at").first()
    if row is None or row["heartbeat_at"] is None:
        return None
    expires = row["heartbeat_at"] + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    return max(0.0, (expires - timezone.now()).total_seconds()) + 1.0


def _fenced_update(claim: Claim, **fields: Any) -> None:
    """Write fields of the claimed job, or raise LeaseLost if another attempt took over or
    the job was cancelled meanwhile (a stale worker never overwrites a newer attempt)."""
    fields.setdefault("heartbeat_at", timezone.now())
    fields["updated_at"] = timezone.now()
    # No savepoint inside a caller's transaction: a lost claim aborts the whole of it.
    with transaction.atomic(savepoint=False):
        updated = Job.objects.filter(
            pk=claim.job.pk, claim_token=claim.token, status=JobStatus.ACTIVE
        ).update(**fields)
        if not updated:
            _raise_for_lost_claim(claim)
        for name, value in fields.items():
            setattr(claim.job, name, value)
        publish_job_event(claim.job)


def _raise_for_lost_claim(claim: Claim) -> None:
    row = Job.objects.filter(pk=claim.job.pk).values("cancel_requested", "claim_token").first()
    if row is not None and row["cancel_requested"] and row["claim_token"] == claim.token:
        raise JobCancelled(str(claim.job.pk))
    raise LeaseLost(str(claim.job.pk))


@contextmanager
def job_heartbeat(claim: Claim) -> Iterator[None]:
    """Refresh the claim's heartbeat on a thread while a long step (a provider call) runs,
    so the sweeper does not take a slow job for a dead one."""
    stop = threading.Event()
    # Ticks of at most 1 s so that the end of a shutdown grace period is seen in time.
    tick = min(1.0, float(settings.JOB_HEARTBEAT_SECONDS))

    def beat() -> None:
        last_beat = time.monotonic()
        try:
            while not stop.wait(tick):
                if _shutdown_grace_over():
                    # SIGTERM came and the current step is still running: give the job back
                    # now, so that it is not left `active` when the worker is killed; this
                    # attempt's later writes are fenced off.
                    if job_release(claim, reason="its step outlived the shutdown grace period"):
                        return
                if time.monotonic() - last_beat >= settings.JOB_HEARTBEAT_SECONDS:
                    Job.objects.filter(pk=claim.job.pk, claim_token=claim.token).update(
                        heartbeat_at=timezone.now()
                    )
                    last_beat = time.monotonic()
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, name=f"heartbeat-{claim.job.pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _shutdown_grace_over() -> bool:
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
        job.status = JobStatus.WAITING
        job.claim_token = None
        job.heartbeat_at = None
        job.attempts_made = max(0, job.attempts_made - 1)
        job.enqueued_at = timezone.now()
        job.save(
            update_fields=[
                "status", "claim_token", "heartbeat_at", "attempts_made", "enqueued_at",
                "updated_at",
            ]
        )  # fmt: skip
        publish_job_event(job)
        job_enqueue_on_commit(job)
    logger.info("job %s released to the queue: %s", job.pk, reason)
    return True


def job_set_progress(claim: Claim, progress: int) -> None:
    _fenced_update(claim, progress=max(claim.job.progress, min(100, progress)))


def _check_not_cancelled(claim: Claim) -> None:
    """Called between steps: a cancel request stops the pipeline before any further work."""
    row = Job.objects.filter(pk=claim.job.pk).values("cancel_requested", "claim_token").first()
    if row is None or row["cancel_requested"]:
        raise JobCancelled(str(claim.job.pk))
    if row["claim_token"] != claim.token:
        raise LeaseLost(str(claim.job.pk))


def _between_steps(claim: Claim) -> None:
    """Before each step: stop for a cancel, a lost claim or a worker shutdown."""
    _check_not_cancelled(claim)
    if worker_is_shutting_down():
        raise WorkerShuttingDown(str(claim.job.pk))


def job_complete(claim: Claim, *, result: dict[str, Any] | None = None) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": JobStatus.COMPLETED,
        "progress": 100,
        "finished_at": now,
        "failed_reason": "",
    }
    if result is not None:
        fields["result"] = result
    _fenced_update(claim, **fields)
    _record_finished(claim.job)


def _record_finished(job: Job) -> None:
    metrics.record_job_finished(
        kind=job.kind, status=job.status, created_at=job.created_at, finished_at=job.finished_at
    )
    signals.send_after_commit(signals.job_finished, job_id=str(job.pk), status=str(job.status))


def job_requeue(claim: Claim, *, result: dict[str, Any]) -> None:
    """Give the job back to the queue to continue in a later run (batched work)."""
    _fenced_update(
        claim, status=JobStatus.WAITING, claim_token=None, result=result, enqueued_at=timezone.now()
    )
    job_enqueue_on_commit(claim.job)


def job_fail(*, job_id: str, token: uuid.UUID | None, reason: str) -> None:
    """Mark the job failed with a readable reason (fenced when a token is given)."""
    with transaction.atomic():
        queryset = Job.objects.select_for_update().filter(pk=job_id)
        if token is not None:
            queryset = queryset.filter(claim_token=token)
        job = queryset.exclude(status__in=FINISHED_STATUSES).first()
        if job is None:
            return
        job.status = JobStatus.FAILED
        job.failed_reason = redact_secrets(reason)[:2000]
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "failed_reason", "finished_at", "updated_at"])
        publish_job_event(job)
        _record_finished(job)


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
        job = Job.objects.select_for_update().filter(pk=job_id, claim_token=token).first()
        if job is None or job.status in FINISHED_STATUSES:
            return None
        if job.attempts_made >= settings.JOB_MAX_ATTEMPTS:
            job.status = JobStatus.FAILED
            reason = f"Gave up after {job.attempts_made} attempts: {reason}"
            job.failed_reason = redact_secrets(reason)[:2000]
            job.finished_at = timezone.now()
            job.save(update_fields=["status", "failed_reason", "finished_at", "updated_at"])
            publish_job_event(job)
            _record_finished(job)
            return None
        countdown = retry_countdown(attempts_made=job.attempts_made, retry_after=retry_after)
        job.status = JobStatus.DELAYED
        job.failed_reason = redact_secrets(reason)[:2000]
        job.retry_at = timezone.now() + timedelta(seconds=countdown)
        job.enqueued_at = timezone.now()
        job.claim_token = None
        job.save(
            update_fields=[
                "status",
                "failed_reason",
                "retry_at",
                "enqueued_at",
                "claim_token",
                "updated_at",
            ]
        )
        publish_job_event(job)
        return countdown


# --- Cancel and retry (API and admin) ------------------------------------------------------


@transaction.atomic
def job_cancel(*, job: Job) -> Job:
    """Cancel a job. A waiting or delayed job never starts; an active one stops at its
    next step (the pipeline checks the flag) and removes its partial outputs."""
    job = Job.objects.select_for_update(of=("self",)).select_related("owner").get(pk=job.pk)
    if job.status == JobStatus.CANCELLED:
        return job
    if job.status == JobStatus.COMPLETED:
        raise InvalidStateError("Job is already completed", extra={"status": job.status})
    if job.status == JobStatus.FAILED:
        raise InvalidStateError("Job has already failed", extra={"status": job.status})
    job.cancel_requested = True
    job.status = JobStatus.CANCELLED
    job.finished_at = timezone.now()
    job.save(update_fields=["cancel_requested", "status", "finished_at", "updated_at"])
    publish_job_event(job)
    _record_finished(job)
    job_id = str(job.id)
    # Revoking is only an optimisation (the claim refuses a cancelled job anyway).
    transaction.on_commit(lambda: _revoke_quietly(job_id))
    return job


def _revoke_quietly(job_id: str) -> None:
    try:
        current_app.control.revoke(job_id)
    except Exception:
        logger.info("could not broadcast revoke for %s", job_id, exc_info=True)


@transaction.atomic
def job_retry(*, job: Job, actor: Any | None = None) -> Job:
    """Run a failed or cancelled job again, keeping the outputs and checkpoint it has.

    A non-staff ``actor`` (the API caller) is held to the pending cap, so retrying old
    failures cannot queue more than a new submission could.
    """
    job = Job.objects.select_for_update(of=("self",)).select_related("owner").get(pk=job.pk)
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise InvalidStateError(
            f"Only failed or cancelled jobs can be retried; this one is {job.status}",
            extra={"status": job.status},
        )
    if actor is not None and not actor.is_staff and job.owner is not None:
        _check_pending_cap(job.owner)
    job.status = JobStatus.WAITING
    job.progress = 0
    job.attempts_made = 0
    job.failed_reason = ""
    job.cancel_requested = False
    job.claim_token = None
    job.heartbeat_at = None
    job.stalled_count = 0
    job.retry_at = None
    job.finished_at = None
    job.enqueued_at = timezone.now()
    job.save()
    job_enqueue_on_commit(job)
    publish_job_event(job)
    return job


# --- The image pipeline ---------------------------------------------------------------------


def storage_prefix(job: Job) -> str:
    assert job.owner is not None, "an image job always has an owner"
    return f"{job.owner.get_username()}/{job.generation_id}"


def output_path(job: Job, platform_id: str) -> str:
    return f"{storage_prefix(job)}/{platform_id}.{EXTENSIONS[job.output_format]}"


def source_path(job: Job, source_format: str = "png") -> str:
    # Under tmp/: the original is a checkpoint, removed by the temp-files cleanup. Its
    # extension (and content type) is the one of the bytes the model returned.
    return f"tmp/{storage_prefix(job)}/original.{EXTENSIONS[source_format]}"


def job_run_generation(*, job_id: str) -> float | None:
    """Run (or resume) an image job: generate once, then render each missing platform.

    Returns the countdown in seconds when a transient error left the job ``delayed`` for a
    retry, or when another attempt holds the job and this message should look again after
    its lease (the task sends that message), else None. Permanent errors, cancellation and a lost
    claim end here; an unexpected error fails the job and propagates to be logged.
    """
    claim = job_claim(job_id=job_id)
    if claim is None:
        check_back = job_lease_remaining(job_id=job_id)
        if check_back is not None:
            # Another attempt holds the job. It may be a live duplicate, or the message
            # Celery gave back after the pool process running it died (reject_on_worker_lost):
            # look again once its lease has run out instead of waiting for the sweeper.
            logger.info(
                "job %s: held by another attempt; checking back in %.0fs", job_id, check_back
            )
            return check_back
        logger.info("job %s: nothing to do (finished or not due)", job_id)
        return None
    job = claim.job
    logger.info(
        "job %s started, attempt %d, %d platforms: %s",
        job_id, job.attempts_made, len(job.platforms), truncate_prompt(job.prompt),
    )  # fmt: skip
    try:
        with job_heartbeat(claim):
            count = _run_generation_steps(claim)
        logger.info("job %s completed with %d images", job_id, count)
    except JobCancelled:
        _remove_outputs(job)
        logger.info("job %s cancelled; partial outputs removed", job_id)
    except LeaseLost:
        logger.warning("job %s: claim lost to another attempt; stopping", job_id)
    except WorkerShuttingDown:
        job_release(claim, reason="the worker is shutting down")
    except PermanentError as exc:
        logger.warning("job %s failed permanently: %s", job_id, exc.message)
        job_fail(job_id=job_id, token=claim.token, reason=exc.message)
    except (TransientError, SoftTimeLimitExceeded) as exc:
        message = getattr(exc, "message", "The job took longer than its time limit")
        retry_after = getattr(exc, "retry_after", None)
        logger.warning("job %s: transient error: %s", job_id, message)
        return job_schedule_retry(
            job_id=job_id, token=claim.token, reason=message, retry_after=retry_after
        )
    except Exception:
        logger.exception("job %s: unexpected error", job_id)
        job_fail(job_id=job_id, token=claim.token, reason="Internal error while generating images")
        raise
    return None


def _run_generation_steps(claim: Claim) -> int:
    """Render the missing platforms on IMAGE_RENDER_THREADS threads (the encoders release
    the GIL); storage, the database and events stay on this thread, which records each
    platform as soon as it is ready, so every finished platform is a checkpoint."""
    job = claim.job
    image = decode_image(_source_image_bytes(claim))
    done = set(job.images.values_list("platform_id", flat=True))
    span = 100 - PROGRESS_SOURCE_READY
    _between_steps(claim)
    todo = [p for p in job.platforms if p not in done]
    renders = _render_missing(job, image, todo)
    try:
        for _ in todo:
            # The render step as the job feels it: the wait for the next finished platform
            # (the threads render ahead while this thread stores the previous one).
            with metrics.observe_step("render"):
                platform_id, rendered = next(renders)
            if worker_is_shutting_down():
                raise WorkerShuttingDown(str(job.pk))
            done.add(platform_id)
            # Recording a platform is fenced together with the progress write, which is
            # also the cancel check between steps (JobCancelled or LeaseLost once the job
            # is no longer this attempt's).
            progress = PROGRESS_SOURCE_READY + span * len(done) // len(job.platforms)
            try:
                _render_and_store(claim, rendered, platform_id, progress=progress)
            except JobCancelled:
                # Saved before the fence refused it: not recorded, so remove it here.
                default_storage.delete(output_path(job, platform_id))
                raise
    finally:
        renders.close()  # a cancelled job stops rendering: at most the running renders finish
    job_complete(claim)
    return len(done)


def _render_missing(
    job: Job, image: Any, platform_ids: list[str]
) -> Generator[tuple[str, RenderedImage], None, None]:
    targets = [(p, PLATFORMS[p].width, PLATFORMS[p].height) for p in platform_ids]
    return render_platforms(
        image,
        targets,
        job.output_format,
        threads=settings.IMAGE_RENDER_THREADS,
        png_compress_level=settings.PNG_COMPRESS_LEVEL,
        png_strategy=settings.PNG_COMPRESS_STRATEGY,
    )


def _source_image_bytes(claim: Claim) -> bytes:
    """The generated original: from the checkpoint if an earlier attempt made it."""
    job = claim.job
    checkpoint = _checkpoint_path(job)
    if checkpoint:
        try:
            with default_storage.open(checkpoint, "rb") as handle:
                data: bytes = handle.read()
        except FileNotFoundError:
            logger.info("job %s: checkpoint %s is gone; generating again", job.id, checkpoint)
        else:
            logger.info("job %s: reusing the generated original from %s", job.id, checkpoint)
            if checkpoint != job.source_path:
                _fenced_update(
                    claim, source_path=checkpoint, progress=max(job.progress, PROGRESS_SOURCE_READY)
                )
            return data
    _between_steps(claim)
    # Counted before the call (a call that dies half-way may still be billed), and fenced:
    # the last check before paying.
    counted = Job.objects.filter(
        pk=job.pk, claim_token=claim.token, status=JobStatus.ACTIVE
    ).update(generation_calls=F("generation_calls") + 1)
    if not counted:
        _raise_for_lost_claim(claim)
    logger.info("job %s: calling the image provider %s", job.id, settings.IMAGE_PROVIDER)
    provider = get_provider()
    try:
        with metrics.observe_step("generate"):
            data = provider.generate(prompt=job.prompt, image_type=job.image_type)
    except Exception as exc:
        metrics.record_provider_error(provider=getattr(provider, "name", "?"), error=exc)
        raise
    # Checked before it is kept, so a checkpoint is always a usable image.
    source_format = inspect_image(data)
    with metrics.observe_step("store"):
        path = _save_checkpoint(job, data, source_format)
    _fenced_update(claim, source_path=path, progress=max(job.progress, PROGRESS_SOURCE_READY))
    return data


def _checkpoint_path(job: Job) -> str:
    """Where an earlier attempt kept the original, or "". After a first attempt, also look
    in the job's tmp folder: an attempt may have stored it and died before recording it."""
    if job.source_path or job.attempts_made <= 1:
        return job.source_path
    try:
        _, names = default_storage.listdir(f"tmp/{storage_prefix(job)}")
    except FileNotFoundError:
        return ""
    originals = sorted(name for name in names if name.startswith("original."))
    return f"tmp/{storage_prefix(job)}/{originals[0]}" if originals else ""


def _save_checkpoint(job: Job, data: bytes, source_format: str) -> str:
    content = file_with_content_type(data, CONTENT_TYPES[source_format])
    for attempt in range(1, CHECKPOINT_SAVE_ATTEMPTS + 1):
        try:
            return default_storage.save(source_path(job, source_format), content)
        except TransientError as exc:
            if attempt == CHECKPOINT_SAVE_ATTEMPTS:
                raise
            delay = min(
                exc.retry_after or 0.5 * 2 ** (attempt - 1), CHECKPOINT_RETRY_MAX_SLEEP_SECONDS
            )
            logger.warning(
                "job %s: storing the original failed (%s); trying again in %.1fs",
                job.id, exc.message, delay,
            )  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")


def _render_and_store(
    claim: Claim, rendered: RenderedImage, platform_id: str, *, progress: int
) -> None:
    job = claim.job
    with metrics.observe_step("store"):
        path = default_storage.save(
            output_path(job, platform_id),
            file_with_content_type(rendered.data, rendered.content_type),
        )
    url = recordable_url(default_storage, path)
    with transaction.atomic():
        # Fenced: only the attempt holding the claim records the output; the fenced update
        # takes the row lock and moves the progress in the same transaction, and the row is
        # one upsert (four round trips per platform instead of thirteen).
        job_set_progress(claim, progress)
        GeneratedImage.objects.bulk_create(
            [
                GeneratedImage(
                    job=job,
                    platform_id=platform_id,
                    width=rendered.width,
                    height=rendered.height,
                    file_size=len(rendered.data),
                    storage_path=path,
                    url=url,
                    format=rendered.format,
                )
            ],
            update_conflicts=True,
            unique_fields=["job", "platform_id"],
            update_fields=["width", "height", "file_size", "storage_path", "url", "format"],
        )


def _remove_outputs(job: Job) -> None:
    # Also the deterministic paths of platforms with no row yet: a cancel seen while a step
    # was storing its file leaves the file but not the row.
    paths = {output_path(job, platform_id) for platform_id in job.platforms}
    for image in job.images.all():
        paths.add(image.storage_path)
    for path in paths:
        default_storage.delete(path)
    job.images.all().delete()
    if job.source_path:
        default_storage.delete(job.source_path)
        Job.objects.filter(pk=job.pk).update(source_path="")


# --- Sweeper ------------------------------------------------------------------------------


def jobs_sweep() -> dict[str, int]:
    """Send again the messages of waiting/delayed jobs that are overdue and missing from the
    broker (a broker that lost its data loses no job); re-run active jobs whose heartbeat
    stopped, at most JOB_MAX_STALLED_COUNT times, then fail them."""
    now = timezone.now()
    overdue = now - timedelta(seconds=settings.JOB_ENQUEUE_OVERDUE_SECONDS)
    resent = stalled = failed = 0

    overdue_jobs = Job.objects.filter(
        Q(status=JobStatus.WAITING, enqueued_at__lt=overdue)
        | Q(status=JobStatus.DELAYED, retry_at__lt=overdue)
    )
    due = list(overdue_jobs.values_list("id", "kind", "priority")[:SWEEP_BATCH])
    # An overdue job is usually just queued behind a backlog: resend only the ones whose
    # message is not in the broker, so a long backlog is not doubled every sweep.
    missing = _missing_from_broker({str(row[0]) for row in due}, since=overdue.timestamp())
    if missing:
        # Look twice: a message a worker has just popped is in neither the queue nor the
        # unacked set for a moment, and a job may have run to its end since the first read.
        time.sleep(SWEEP_RECHECK_SECONDS)
        missing &= _missing_from_broker(missing, since=overdue.timestamp())
        still_due = overdue_jobs.filter(pk__in=missing).values_list("id", flat=True)
        missing &= {str(pk) for pk in still_due}
    for job_id, kind, priority in due:
        if str(job_id) not in missing:
            continue
        Job.objects.filter(pk=job_id).update(enqueued_at=now)
        if job_send_message(job_id=str(job_id), kind=kind, priority=priority):
            resent += 1

    stale = now - timedelta(seconds=settings.JOB_LEASE_SECONDS * 2)
    for job_id in list(
        Job.objects.filter(status=JobStatus.ACTIVE, heartbeat_at__lt=stale).values_list(
            "id", flat=True
        )[:SWEEP_BATCH]
    ):
        with transaction.atomic():
            job = (
                Job.objects.select_for_update()
                .filter(pk=job_id, status=JobStatus.ACTIVE, heartbeat_at__lt=stale)
                .first()
            )
            if job is None:
                continue
            if job.stalled_count >= settings.JOB_MAX_STALLED_COUNT:
                _fail_stalled(job, now)
                failed += 1
                continue
            job.stalled_count += 1
            job.status = JobStatus.WAITING
            job.claim_token = None
            job.enqueued_at = now
            job.save()
            publish_job_event(job)
            job_enqueue_on_commit(job)
            stalled += 1
    if resent or stalled or failed:
        logger.info("sweeper: resent %d, re-queued %d stalled, failed %d", resent, stalled, failed)
    return {"resent": resent, "stalled": stalled, "failedStalled": failed}


def _fail_stalled(job: Job, now: Any) -> None:
    job.status = JobStatus.FAILED
    job.failed_reason = (
        f"Job stalled {job.stalled_count + 1} times (its worker stopped responding); "
        f"gave up after {job.stalled_count} re-runs"
    )
    job.finished_at = now
    job.claim_token = None
    job.save()
    publish_job_event(job)
    _record_finished(job)
    logger.warning("job %s failed: %s", job.pk, job.failed_reason)


def _missing_from_broker(job_ids: set[str], *, since: float) -> set[str]:
    """The jobs among ``job_ids`` whose message the broker does not hold. Held means in a
    ready queue (any priority), or taken by a worker since ``since`` (unix time) and not yet
    acknowledged; a message a worker took before that and never acknowledged belongs to a
    dead or stuck worker and counts as missing. When the broker cannot be read all are
    "missing": a needless resend costs one no-op delivery, a lost message a lost job."""
    if not job_ids:
        return set()
    queues = sorted({route["queue"] for route in settings.CELERY_TASK_ROUTES.values()})
    try:
        held = broker.held_task_ids(queues, since=since, scan_limit=SWEEP_SCAN_LIMIT)
    except Exception:
        logger.warning("sweeper: could not read the broker's queues", exc_info=True)
        return job_ids
    if held is None:
        logger.info("sweeper: backlog over %d messages; not resending", SWEEP_SCAN_LIMIT)
        return set()
    return job_ids - held
