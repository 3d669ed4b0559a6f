"""Submission: the job row inserted (waiting), its message sent after the commit.

A plain submit is one autocommitted statement: the INSERT, made conditional on the count of
the owner's pending jobs being far from the cap (``INSERT ... SELECT ... WHERE (SELECT
count(*) ...) <= cap - margin``). A job that comes with more than its row (an idempotency
key, a callback) is one transaction; so is a submit of an owner near the pending-jobs cap
(that statement inserted nothing) or held to a daily quota, which counts under the owner's
row lock so that concurrent submits cannot go past either.

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
from typing import Any, Literal, overload

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connections, router, transaction
from django.db.models.sql import InsertQuery
from django.utils import timezone

from jobs.models import PENDING_STATUSES, Job, JobKind
from jobs.platforms import PLATFORM_IDS
from jobs.services.delivery import job_enqueue_on_commit
from jobs.services.transitions import job_created
from jobs.spend.quotas import (
    generations_for_submission,
    quota_check,
    quota_limit,
    quota_override_sql,
    quota_unlimited_unless_overridden,
)
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


# Below this many jobs short of the cap, a submit counts the owner's pending jobs without a
# lock: only more than this many submits of one user in flight at the same instant could
# together go past the cap. Nearer, the count is taken under the owner's row lock.
PENDING_CAP_LOCK_MARGIN = 10


def pending_cap_far_bound(*, adding: int = 1) -> int:
    """The most pending jobs an owner may have for ``adding`` more to be admitted without
    the owner's row lock: PENDING_CAP_LOCK_MARGIN jobs short of the cap once they are in."""
    return settings.JOB_MAX_PENDING_PER_USER - adding - PENDING_CAP_LOCK_MARGIN


def check_pending_cap(owner: Any, *, adding: int = 1) -> None:
    """TooManyPendingJobsError when ``adding`` more jobs would take the owner past the most
    jobs waiting or running."""
    # The owner's row lock makes concurrent submissions of one user count one at a time,
    # so together they cannot go past the cap. It also waits for the submits that counted
    # without it (_insert_unless_near_cap) and are inserting: their INSERT holds a key-share
    # lock on the owner's row (the foreign key) until it commits.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).values("pk").first()
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
    Near the pending-jobs cap (or for an owner with a daily quota), one transaction: the
    owner's row lock taken by the checks holds until the INSERT commits, so concurrent
    submissions of one user cannot go past them.
    """
    request = JobRequest(
        prompt=prompt, platforms=platforms, image_type=image_type, output_format=output_format,
        priority=priority, user_id=user_id, callback_url=callback_url, reuse=reuse,
    )  # fmt: skip
    if callback_url:  # resolves its host: before the transaction and its lock
        webhooks.callback_url_check(callback_url)
    owner = resolve_owner(actor=actor, user_id=request.user_id)
    # An owner held to a daily quota is always admitted under the lock (the quota counts
    # queued jobs too). Staff, or everyone when there is no default quota, are unlimited
    # unless a UserQuota row of theirs says otherwise: the conditional INSERT checks that.
    locked = not quota_unlimited_unless_overridden(owner)
    # A plain submit far from the cap and free of a quota is one conditional INSERT
    # (autocommitted: no BEGIN/COMMIT). Not with the Supabase mirror on: its outbox row (a
    # receiver of job_status_changing) must commit with the job.
    if not (locked or idempotency_key or callback_url or settings.SUPABASE_SYNC_TABLES):
        job = _job_insert(owner=owner, request=request, unless_near_cap=True)
        if job is not None:
            return Submission(job=job, created=True)
        locked = True  # near the cap or held to a quota: count under the owner's row lock
    with transaction.atomic():
        return _job_insert_generation(
            owner=owner, request=request, idempotency_key=idempotency_key, locked=locked
        )


def _job_insert_generation(
    *, owner: Any, request: JobRequest, idempotency_key: str | None, locked: bool
) -> Submission:
    """In a transaction: the job inserted, unless its idempotency key names one already.
    Unless ``locked`` (the owner must be admitted under the row lock), the INSERT is tried
    first on the condition that the owner is far from the cap and free of a quota."""
    fields = request.job_fields()
    if idempotency_key:
        existing = _job_for_idempotency_key(owner=owner, key=idempotency_key)
        if existing is not None:
            return _idempotent_replay(existing, fields)
    try:
        # The savepoint is only needed to survive a duplicate idempotency key.
        with transaction.atomic() if idempotency_key else nullcontext():
            job = None
            if not locked:
                job = _job_insert(
                    owner=owner,
                    request=request,
                    idempotency_key=idempotency_key,
                    unless_near_cap=True,
                )
            if job is None:
                _admit_jobs(owner, requests=[request])
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


@overload
def _job_insert(
    *,
    owner: Any,
    request: JobRequest,
    idempotency_key: str | None = None,
    unless_near_cap: Literal[False] = False,
) -> Job: ...
@overload
def _job_insert(
    *,
    owner: Any,
    request: JobRequest,
    idempotency_key: str | None = None,
    unless_near_cap: bool,
) -> Job | None: ...
def _job_insert(
    *, owner: Any, request: JobRequest, idempotency_key: str | None = None,
    unless_near_cap: bool = False,
) -> Job | None:  # fmt: skip
    """Insert one job (waiting); its message and events go after the commit.

    ``unless_near_cap``: admitted by the INSERT itself, only if the owner is far from the
    pending-jobs cap (pending_cap_far_bound) and has no UserQuota row that sets a limit (for
    owners of quota_unlimited_unless_overridden); None when it inserted nothing."""
    job = Job(
        owner=owner,
        kind=JobKind.IMAGE_GENERATION,
        idempotency_key=idempotency_key or None,
        enqueued_at=timezone.now(),
        **request.job_fields(),
    )
    if not unless_near_cap:
        job.save(force_insert=True)
    elif not _insert_unless_near_cap(job):
        return None
    if request.callback_url:
        webhooks.job_callback_create(job=job, url=request.callback_url)
    job_enqueue_on_commit(job)
    job_created(job)
    return job


def _insert_unless_near_cap(job: Job, *, adding: int = 1) -> bool:
    """INSERT ``job`` (built, not saved) in one statement with the COUNT of its owner's
    pending jobs, only if that count is at most pending_cap_far_bound and the owner has no
    UserQuota row that sets a limit: whether it did.

    Django's own INSERT of the row, with ``VALUES (...)`` turned into ``SELECT ... WHERE
    (SELECT count(*) ...) <= bound AND NOT EXISTS (the quota override)``. No model signals
    are sent (none are connected to Job; ``job_created`` announces the job)."""
    bound = pending_cap_far_bound(adding=adding)
    if bound < 0:
        return False
    meta = Job._meta
    using = router.db_for_write(Job)
    connection = connections[using]
    query = InsertQuery(Job)
    query.insert_values(meta.local_concrete_fields, [job])
    compiler = query.get_compiler(using=using)
    [(insert_sql, insert_params)] = compiler.as_sql()  # sets created_at and updated_at
    into, values = insert_sql.split(" VALUES (", 1)
    assert values.endswith(")"), insert_sql
    qn = connection.ops.quote_name
    owner_column = qn(Job.owner.field.column)
    status_column = qn("status")  # Job.status: no db_column
    statuses = sorted(PENDING_STATUSES)
    sql = (
        f"{into} SELECT {values[:-1]} WHERE (SELECT COUNT(*) FROM {qn(meta.db_table)} "
        f"WHERE {owner_column} = %s AND {status_column} IN "
        f"({', '.join(['%s'] * len(statuses))})) <= %s AND NOT {quota_override_sql()}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*insert_params, job.owner_id, *statuses, bound, job.owner_id])
        inserted = cursor.rowcount == 1
    if inserted:
        job._state.adding = False
        job._state.db = using
    return inserted


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
