"""Where a job's files live, and the removal of a cancelled job's files.

Paths are deterministic (``{user}/{generationId}/{platform}.{ext}``, the original under
``tmp/``), so a re-run overwrites instead of duplicating. A cancelled job's files are removed
by the attempt that was running when it was cancelled (fenced by that attempt's claim
token), or, for a job cancelled between attempts, by the next delivery of its message (no
token). Each removal re-checks under the row lock that the job is still cancelled and still
carries that token: a retry clears the token, so nothing the retried run makes is removed.
"""

from __future__ import annotations

import logging
import uuid

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.pipeline import EXTENSIONS

logger = logging.getLogger(__name__)


def storage_prefix(job: Job) -> str:
    assert job.owner is not None, "an image job always has an owner"
    return f"{job.owner.get_username()}/{job.generation_id}"


def output_path(job: Job, platform_id: str) -> str:
    return f"{storage_prefix(job)}/{platform_id}.{EXTENSIONS[job.output_format]}"


def source_path(job: Job, source_format: str = "png") -> str:
    # Under tmp/: the original is a checkpoint, removed by the temp-files cleanup. Its
    # extension (and content type) is the one of the bytes the model returned.
    return f"tmp/{storage_prefix(job)}/original.{EXTENSIONS[source_format]}"


def _still_cancelled(job: Job, token: uuid.UUID | None) -> bool:
    """Under the row lock (held until the caller's transaction ends)."""
    return (
        Job.objects.select_for_update(of=("self",))
        .filter(pk=job.pk, status=JobStatus.CANCELLED, claim_token=token)
        .values_list("pk", flat=True)
        .first()
        is not None
    )


def job_has_outputs(job: Job) -> bool:
    return bool(job.source_path) or job.images.exists()


def job_remove_cancelled_outputs(job: Job, *, token: uuid.UUID | None) -> bool:
    """Remove the files and image rows of a cancelled job, as long as it stays cancelled
    with claim token ``token``; False if a retry came first (then nothing more is removed).

    Rows first, in one locked check: a retried run must never find a row whose file is
    gone. Then each file under the lock, so a retry waits for the one removal in progress
    (bounded by the storage's timeout) and the retried run never has its file removed.
    Also the deterministic paths of platforms with no row: a cancel seen while a step was
    storing its file leaves the file but not the row.

    The checkpoint (``source_path``) is forgotten last, once every file is gone: a removal
    cut short (the worker killed between two deletes) leaves the job still showing outputs,
    so the sweeper's leftovers pass (``job_has_outputs``' condition) finds it and finishes
    it. A retried run that finds the checkpoint's file already gone generates again.
    """
    paths = {output_path(job, platform_id) for platform_id in job.platforms}
    with transaction.atomic():
        if not _still_cancelled(job, token):
            return False
        paths.update(job.images.values_list("storage_path", flat=True))
        source = Job.objects.filter(pk=job.pk).values_list("source_path", flat=True).first()
        if source:
            paths.add(source)
        job.images.all().delete()
    for path in sorted(paths):
        with transaction.atomic():
            if not _still_cancelled(job, token):
                logger.info("job %s was retried; leaving its files alone", job.pk)
                return False
            default_storage.delete(path)
    with transaction.atomic():
        if not _still_cancelled(job, token):
            return False
        Job.objects.filter(pk=job.pk).update(source_path="", updated_at=timezone.now())
    job.source_path = ""
    return True
