"""Submission: the job row inserted (waiting) in one transaction, its message sent after
the commit. The owner's row lock makes the pending-jobs cap hold under concurrent submits."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.models import PENDING_STATUSES, Job, JobKind
from jobs.platforms import PLATFORM_IDS
from jobs.services.delivery import job_enqueue_on_commit
from jobs.services.transitions import job_created
from jobs.spend.quotas import quota_check_submission
from jobs.spend.reuse import reuse_requested
from jobs.webhooks import services as webhooks
from snapasset.core.exceptions import (
    ApplicationError,
    PermissionDeniedError,
    TooManyPendingJobsError,
)


def resolve_owner(*, actor: Any, user_id: str | None) -> Any:
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


def check_pending_cap(owner: Any) -> None:
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
    reuse: bool | None = None,
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
            reuse=reuse_requested(reuse),
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
    reuse: bool,
) -> Submission:
    owner = resolve_owner(actor=actor, user_id=user_id)
    platforms = list(platforms or PLATFORM_IDS)
    fields = {
        "prompt": prompt,
        "platforms": platforms,
        "image_type": image_type,
        "output_format": output_format,
        "priority": priority,
        "reuse": reuse,
    }
    if idempotency_key:
        existing = _job_for_idempotency_key(owner=owner, key=idempotency_key)
        if existing is not None:
            return _idempotent_replay(existing, fields)

    check_pending_cap(owner)
    # Under the owner's row lock the cap just took: concurrent submissions count one by one.
    quota_check_submission(owner, reuse=reuse, prompt=prompt, image_type=image_type)
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
    job_created(job)
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
