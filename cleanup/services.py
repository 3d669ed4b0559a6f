"""File cleanup: remove old checkpoints and failed generations, one bounded batch at a time.

A cleanup job deletes at most CLEANUP_BATCH_SIZE jobs' files per run and then re-queues
itself until nothing is left, so a large backlog never holds a worker (or a database
transaction) for long and the images queue is never starved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from jobs.live.publish import publish_stats_changed
from jobs.models import FINISHED_STATUSES, GeneratedImage, Job, JobKind, JobStatus
from jobs.services.delivery import job_enqueue_on_commit
from jobs.services.lease import job_claim
from jobs.services.outcomes import job_complete, job_requeue
from jobs.services.transitions import job_created
from snapasset.core.exceptions import JobCancelled, LeaseLost

logger = logging.getLogger(__name__)

# 200 jobs is at most ~1,400 file deletions (6 platforms + original): a few seconds on
# Supabase's batch delete, well under the task's soft time limit, and small enough that
# the row deletes stay one short transaction.
CLEANUP_BATCH_SIZE = 200
# Celery task results (django-celery-results rows, no files) are small: a larger batch.
TASK_RESULT_BATCH_SIZE = 2000
CLEANUP_TYPES = ("temp-files", "failed-generations", "completed-jobs", "task-results", "all")


def default_older_than_days(cleanup_type: str) -> int:
    if cleanup_type == "temp-files":
        return settings.CLEANUP_TEMP_AFTER_DAYS
    if cleanup_type == "completed-jobs":
        return settings.CLEANUP_COMPLETED_AFTER_DAYS
    if cleanup_type == "task-results":
        return int(settings.CELERY_RESULT_EXPIRES // 86400)
    return settings.CLEANUP_FAILED_AFTER_DAYS


@dataclass
class CleanupBatch:
    deleted_files: int = 0
    deleted_jobs: int = 0
    deleted_task_results: int = 0
    cleared_checkpoints: int = 0
    paths: list[str] = field(default_factory=list)
    more: bool = False


def _delete_files(paths: list[str], *, dry_run: bool) -> int:
    """Delete the files; how many were deleted. Supabase deletes a batch per request (and
    counts only files it still had); other storages delete one by one."""
    if dry_run or not paths:
        return len(paths)
    delete_many = getattr(default_storage, "delete_many", None)
    if delete_many is not None:
        return int(delete_many(paths))
    deleted = 0
    for path in paths:
        try:
            default_storage.delete(path)
            deleted += 1
        except FileNotFoundError:
            pass
    return deleted


def cleanup_temp_files_batch(*, older_than_days: int, dry_run: bool = False) -> CleanupBatch:
    """Remove generated originals (checkpoints) of jobs finished over N days ago.

    The rows are re-checked under their lock and cleared first, then the files deleted: a
    job retried meanwhile (no longer finished) keeps its checkpoint and the path a re-run
    records; a file whose row was cleared is nobody's any more."""
    finished_long_ago = Job.objects.filter(
        kind=JobKind.IMAGE_GENERATION,
        status__in=FINISHED_STATUSES,
        finished_at__lt=timezone.now() - timedelta(days=older_than_days),
    ).exclude(source_path="")
    rows = list(
        finished_long_ago.order_by("finished_at", "id").values_list("id", "source_path")[
            : CLEANUP_BATCH_SIZE + 1
        ]
    )
    batch = CleanupBatch(more=len(rows) > CLEANUP_BATCH_SIZE)
    rows = rows[:CLEANUP_BATCH_SIZE]
    if dry_run:
        batch.paths = [path for _, path in rows]
        batch.deleted_files = len(batch.paths)
        return batch
    with transaction.atomic():
        locked = dict(
            finished_long_ago.select_for_update(of=("self",))
            .filter(pk__in=[pk for pk, _ in rows])
            .values_list("id", "source_path")
        )
        batch.cleared_checkpoints = Job.objects.filter(pk__in=list(locked)).update(
            source_path="", updated_at=timezone.now()
        )
    batch.paths = sorted(locked.values())
    batch.deleted_files = _delete_files(batch.paths, dry_run=False)
    return batch


def cleanup_failed_generations_batch(
    *, older_than_days: int, dry_run: bool = False
) -> CleanupBatch:
    """Delete failed and cancelled image jobs finished over N days ago, files and rows."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    return _delete_jobs_batch(
        Job.objects.filter(
            kind=JobKind.IMAGE_GENERATION,
            status__in=(JobStatus.FAILED, JobStatus.CANCELLED),
            finished_at__lt=cutoff,
        ),
        dry_run=dry_run,
    )


def cleanup_completed_jobs_batch(*, older_than_days: int, dry_run: bool = False) -> CleanupBatch:
    """Delete completed jobs (image and cleanup) finished over N days ago, files and rows:
    the retention period of results (CLEANUP_COMPLETED_AFTER_DAYS); after it the API
    answers 404 for them."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    return _delete_jobs_batch(
        Job.objects.filter(status=JobStatus.COMPLETED, finished_at__lt=cutoff), dry_run=dry_run
    )


def cleanup_task_results_batch(*, older_than_days: int, dry_run: bool = False) -> CleanupBatch:
    """Delete Celery task results (django-celery-results) done over N days ago, in batches;
    when none are left, the result backend's own cleanup runs too (result_expires)."""
    from django_celery_results.models import TaskResult

    cutoff = timezone.now() - timedelta(days=older_than_days)
    ids = list(
        TaskResult.objects.filter(date_done__lt=cutoff)
        .order_by("date_done")
        .values_list("id", flat=True)[: TASK_RESULT_BATCH_SIZE + 1]
    )
    batch = CleanupBatch(more=len(ids) > TASK_RESULT_BATCH_SIZE)
    ids = ids[:TASK_RESULT_BATCH_SIZE]
    if dry_run:
        batch.deleted_task_results = len(ids)
        return batch
    batch.deleted_task_results = TaskResult.objects.filter(pk__in=ids).delete()[0]
    if not batch.more:
        current_app.backend.cleanup()
    return batch


def _delete_jobs_batch(queryset: Any, *, dry_run: bool) -> CleanupBatch:
    """Delete one batch of the jobs ``queryset`` selects: files and rows.

    Three steps, each re-checking the jobs' state under their row locks: (1) the jobs still
    selected are detached from their files (image rows deleted, checkpoint cleared), (2) the
    files are deleted, (3) the rows still selected are deleted. A job retried at any point
    (waiting again) is no longer selected: before (1) it keeps everything; after it, it
    keeps its row and its run starts from nothing instead of finding records of deleted
    files. A crash leaves at worst files without a row, never a row without its files."""
    job_ids = list(
        queryset.order_by("finished_at", "id").values_list("id", flat=True)[
            : CLEANUP_BATCH_SIZE + 1
        ]
    )
    batch = CleanupBatch(more=len(job_ids) > CLEANUP_BATCH_SIZE)
    job_ids = job_ids[:CLEANUP_BATCH_SIZE]
    if dry_run:
        batch.paths = _job_paths(job_ids)
        batch.deleted_files = len(batch.paths)
        batch.deleted_jobs = len(job_ids)
        return batch
    with transaction.atomic():
        locked = list(
            queryset.select_for_update(of=("self",))
            .filter(pk__in=job_ids)
            .values_list("id", flat=True)
        )
        batch.paths = _job_paths(locked)
        GeneratedImage.objects.filter(job_id__in=locked).delete()
        Job.objects.filter(pk__in=locked).exclude(source_path="").update(
            source_path="", updated_at=timezone.now()
        )
    batch.deleted_files = _delete_files(batch.paths, dry_run=False)
    with transaction.atomic():
        still = queryset.select_for_update(of=("self",)).filter(pk__in=locked)
        batch.deleted_jobs = (
            Job.objects.filter(pk__in=list(still.values_list("id", flat=True)))
            .delete()[1]
            .get("jobs.Job", 0)
        )
        if batch.deleted_jobs:
            publish_stats_changed()
    return batch


def _job_paths(job_ids: list[Any]) -> list[str]:
    paths = list(
        GeneratedImage.objects.filter(job_id__in=job_ids).values_list("storage_path", flat=True)
    )
    paths += [
        p for p in Job.objects.filter(pk__in=job_ids).values_list("source_path", flat=True) if p
    ]
    return paths


def cleanup_batch(
    *, cleanup_type: str, older_than_days: int, dry_run: bool = False
) -> CleanupBatch:
    total = CleanupBatch()
    if cleanup_type in ("temp-files", "all"):
        days = older_than_days if cleanup_type == "temp-files" else settings.CLEANUP_TEMP_AFTER_DAYS
        part = cleanup_temp_files_batch(older_than_days=days, dry_run=dry_run)
        _add(total, part)
    if cleanup_type in ("failed-generations", "all"):
        part = cleanup_failed_generations_batch(older_than_days=older_than_days, dry_run=dry_run)
        _add(total, part)
    if cleanup_type in ("completed-jobs", "all"):
        days = older_than_days if cleanup_type != "all" else settings.CLEANUP_COMPLETED_AFTER_DAYS
        _add(total, cleanup_completed_jobs_batch(older_than_days=days, dry_run=dry_run))
    if cleanup_type in ("task-results", "all"):
        days = older_than_days if cleanup_type != "all" else default_older_than_days("task-results")
        _add(total, cleanup_task_results_batch(older_than_days=days, dry_run=dry_run))
    return total


def _add(total: CleanupBatch, part: CleanupBatch) -> None:
    total.deleted_files += part.deleted_files
    total.deleted_jobs += part.deleted_jobs
    total.deleted_task_results += part.deleted_task_results
    total.cleared_checkpoints += part.cleared_checkpoints
    total.paths += part.paths
    total.more = total.more or part.more


def cleanup_run(*, job_id: str) -> None:
    """Run one batch of a cleanup job; re-queue the job while more remains."""
    claim = job_claim(job_id=job_id)
    if claim is None:
        return
    job = claim.job
    params = job.params
    try:
        batch = cleanup_batch(
            cleanup_type=params.get("type", "all"),
            older_than_days=int(params.get("olderThanDays", settings.CLEANUP_FAILED_AFTER_DAYS)),
        )
        result: dict[str, Any] = {
            "type": params.get("type", "all"),
            "olderThanDays": params.get("olderThanDays"),
            "deletedFiles": job.result.get("deletedFiles", 0) + batch.deleted_files,
            "deletedJobs": job.result.get("deletedJobs", 0) + batch.deleted_jobs,
            "clearedCheckpoints": job.result.get("clearedCheckpoints", 0)
            + batch.cleared_checkpoints,
            "deletedTaskResults": job.result.get("deletedTaskResults", 0)
            + batch.deleted_task_results,
            "batches": job.result.get("batches", 0) + 1,
        }
        if batch.more:
            job_requeue(claim, result=result)
        else:
            job_complete(claim, result=result)
        logger.info("cleanup %s: %s%s", job_id, result, " (more to do)" if batch.more else "")
    except (JobCancelled, LeaseLost):
        logger.info("cleanup %s stopped (cancelled or taken over)", job_id)


@transaction.atomic
def cleanup_create(*, actor: Any, cleanup_type: str, older_than_days: int | None) -> Job:
    """Insert a waiting cleanup job and enqueue it after commit (POST /api/jobs/cleanup)."""
    params = {
        "type": cleanup_type,
        "olderThanDays": (
            older_than_days
            if older_than_days is not None
            else default_older_than_days(cleanup_type)
        ),
    }
    job = Job.objects.create(
        owner=actor,
        kind=JobKind.FILE_CLEANUP,
        params=params,
        # Cleanup runs before queued image work on its own queue; priority is irrelevant.
        priority=0,
        enqueued_at=timezone.now(),
    )
    job_enqueue_on_commit(job)
    job_created(job)
    return job


def cleanup_schedule() -> Job:
    """The daily run from celery beat: a system-owned cleanup job of type `all`."""
    return cleanup_create(
        actor=None, cleanup_type="all", older_than_days=settings.CLEANUP_FAILED_AFTER_DAYS
    )
