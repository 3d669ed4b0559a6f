"""Submission: the job row inserted (waiting) in one transaction, its message sent after
the commit. The owner's row lock makes the pending-jobs cap hold under concurrent submits.

A batch (``job_create_generation_batch``) goes the same way, every job in one transaction:
each request is checked on its own (its callbackUrl, its owner), the owners' pending caps
and daily quotas are checked for the batch as a whole, then each job is inserted as a
single submission inserts it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
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
from jobs.spend.quotas import generations_for_submission, quota_check, quota_limit
from jobs.spend.reuse import reuse_requested
from jobs.webhooks import services as webhooks
from snapasset.core.exceptions import (
    ApplicationError,
    PermissionDeniedError,
    TooManyPendingJobsError,
)

# The most jobs one batch may carry.
BATCH_MAX_JOBS = 100


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


def check_pending_cap(owner: Any, *, adding: int = 1) -> None:
    """TooManyPendingJobsError when ``adding`` more jobs would take the owner past the most
    jobs waiting or running."""
    # The owner's row lock makes concurrent submissions of one user count one at a time,
    # so together they cannot go past the cap.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
    pending = Job.objects.filter(owner=owner, status__in=PENDING_STATUSES).count()
    if pending + adding > settings.JOB_MAX_PENDING_PER_USER:
        batch = f" and this batch adds {adding}" if adding > 1 else ""
        raise TooManyPendingJobsError(
            f"You have {pending} jobs waiting or running{batch} (limit "
            f"{settings.JOB_MAX_PENDING_PER_USER}); wait for some to finish"
        )


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool


@dataclass(frozen=True)
class JobRequest:
    """What one submission asks for (the body of POST /api/jobs/generate)."""

    prompt: str
    platforms: list[str] | None = None
    image_type: str = "vivid"
    output_format: str = "png"
    priority: int = 0
    user_id: str | None = None
    callback_url: str | None = None
    reuse: bool | None = None  # None: GENERATION_REUSE_DEFAULT

    @property
    def reuses(self) -> bool:
        """Whether the job asks to reuse an identical original (jobs/spend/reuse.py)."""
        return reuse_requested(self.reuse)

    def job_fields(self) -> dict[str, Any]:
        """The Job row's fields this request sets."""
        return {
            "prompt": self.prompt,
            "platforms": list(self.platforms or PLATFORM_IDS),
            "image_type": self.image_type,
            "output_format": self.output_format,
            "priority": self.priority,
            "reuse": self.reuses,
        }


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
    request = JobRequest(
        prompt=prompt, platforms=platforms, image_type=image_type, output_format=output_format,
        priority=priority, user_id=user_id, callback_url=callback_url, reuse=reuse,
    )  # fmt: skip
    if callback_url:  # resolves its host: before the transaction and its lock
        webhooks.callback_url_check(callback_url)
    with transaction.atomic():
        return _job_insert_generation(actor=actor, request=request, idempotency_key=idempotency_key)


def _job_insert_generation(
    *, actor: Any, request: JobRequest, idempotency_key: str | None
) -> Submission:
    owner = resolve_owner(actor=actor, user_id=request.user_id)
    fields = request.job_fields()
    if idempotency_key:
        existing = _job_for_idempotency_key(owner=owner, key=idempotency_key)
        if existing is not None:
            return _idempotent_replay(existing, fields)

    _admit_jobs(owner, requests=[request])
    try:
        # The savepoint is only needed to survive a duplicate idempotency key.
        with transaction.atomic() if idempotency_key else nullcontext():
            job = _job_insert(owner=owner, request=request, idempotency_key=idempotency_key)
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won the insert: answer with its job.
        existing = _job_for_idempotency_key(owner=owner, key=idempotency_key or "")
        if existing is None:
            raise
        return _idempotent_replay(existing, fields)
    return Submission(job=job, created=True)


def _admit_jobs(owner: Any, *, requests: Sequence[JobRequest]) -> None:
    """Raise (429) unless the owner may queue these jobs now: the pending-jobs cap (its row
    lock held until the commit) and the daily quota of paid generations (a job that will
    reuse an identical original needs none; nothing is looked up for an unlimited owner)."""
    check_pending_cap(owner, adding=len(requests))
    if quota_limit(owner)[0] is None:
        return
    generations = sum(
        generations_for_submission(
            owner, reuse=request.reuses, prompt=request.prompt, image_type=request.image_type
        )
        for request in requests
    )
    quota_check(owner, generations=generations)


def _job_insert(*, owner: Any, request: JobRequest, idempotency_key: str | None = None) -> Job:
    """Insert one admitted job (waiting); its message and events go after the commit."""
    job = Job.objects.create(
        owner=owner,
        kind=JobKind.IMAGE_GENERATION,
        idempotency_key=idempotency_key or None,
        enqueued_at=timezone.now(),
        **request.job_fields(),
    )
    if request.callback_url:
        webhooks.job_callback_create(job=job, url=request.callback_url)
    job_enqueue_on_commit(job)
    job_created(job)
    return job


def job_create_generation_batch(
    *, actor: Any, requests: Sequence[JobRequest]
) -> list[Job | ApplicationError]:
    """Insert the jobs of a batch, in one transaction, each enqueued after the commit as a
    single submission is; the answer has one item per request, in order: its job, or the
    error that refused it alone (its callbackUrl, or a userId it may not use).

    The pending-jobs cap and the daily quota hold for the batch as a whole, per owner (staff
    may submit for several): when the accepted jobs would pass either, TooManyPendingJobsError
    or QuotaExceededError is raised and nothing is inserted."""
    results: dict[int, Job | ApplicationError] = {}
    accepted: list[tuple[int, Any, JobRequest]] = []
    owners: dict[str | None, Any] = {}
    callbacks_checked: set[str] = set()  # a URL repeated in the batch is resolved once
    for index, request in enumerate(requests):
        try:
            if request.callback_url and request.callback_url not in callbacks_checked:
                # Resolves its host: before the transaction.
                webhooks.callback_url_check(request.callback_url)
                callbacks_checked.add(request.callback_url)
            if request.user_id not in owners:
                owners[request.user_id] = resolve_owner(actor=actor, user_id=request.user_id)
        except ApplicationError as error:
            results[index] = error
        else:
            accepted.append((index, owners[request.user_id], request))

    if accepted:
        by_pk = {owner.pk: owner for _, owner, _ in accepted}
        counts = Counter(owner.pk for _, owner, _ in accepted)
        with transaction.atomic():
            for pk in sorted(counts):  # one lock order: concurrent batches cannot deadlock
                _admit_jobs(by_pk[pk], requests=[r for _, o, r in accepted if o.pk == pk])
            for index, owner, request in accepted:
                results[index] = _job_insert(owner=owner, request=request)
    return [results[index] for index in range(len(requests))]


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
