"""Never pay twice for the same picture (opt-in): find an original the user already paid for.

A job may reuse the original of an earlier generation of the same owner when the prompt,
the style (``imageType``), the model and the size are the same, the call succeeded within
REUSE_WINDOW_HOURS, the job completed, and its original is still in storage (the
temp-files cleanup removes originals after CLEANUP_TEMP_AFTER_DAYS). Only originals that
were paid for are sources (``succeeded`` calls): a reused job is never the source of
another, so the window always counts from the real generation.

The caller copies the original to the new job's own checkpoint path (``source_path``)
rather than pointing at it: a cancel or the cleanup of either job removes its own files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs.models import JobKind, JobStatus
from jobs.spend.models import CallOutcome, ProviderCall

logger = logging.getLogger(__name__)

# Candidates looked at (newest first) before giving up: originals may have been cleaned up.
CANDIDATES = 5


@dataclass(frozen=True)
class ReusableOriginal:
    job_id: str  # the job that paid for it
    source_path: str  # where its original is stored
    model: str
    size: str
    quality: str
    generated_at: datetime


def reuse_requested(flag: bool | None) -> bool:
    """A submission's ``reuse`` field, or GENERATION_REUSE_DEFAULT when it says nothing;
    never when REUSE_WINDOW_HOURS is 0."""
    if not settings.REUSE_WINDOW_HOURS:
        return False
    return settings.GENERATION_REUSE_DEFAULT if flag is None else flag


def reuse_find_original(
    *,
    owner: Any,
    prompt: str,
    image_type: str,
    model: str,
    size: str,
    exclude_job_id: Any = None,
    now: datetime | None = None,
) -> ReusableOriginal | None:
    """The newest original ``owner`` paid for with this prompt, style, model and size
    within REUSE_WINDOW_HOURS whose file is still stored, or None."""
    if not settings.REUSE_WINDOW_HOURS:
        return None
    since = (now or timezone.now()) - timedelta(hours=settings.REUSE_WINDOW_HOURS)
    calls = (
        ProviderCall.objects.filter(
            user=owner,
            outcome=CallOutcome.SUCCEEDED,
            model=model,
            size=size,
            created_at__gte=since,
            job__kind=JobKind.IMAGE_GENERATION,
            job__status=JobStatus.COMPLETED,
            job__prompt=prompt,
            job__image_type=image_type,
        )
        .exclude(job__source_path="")
        .select_related("job")
        .order_by("-created_at")
    )
    if exclude_job_id is not None:
        calls = calls.exclude(job_id=exclude_job_id)
    for call in calls[:CANDIDATES]:
        assert call.job is not None
        path = call.job.source_path
        try:
            stored = default_storage.exists(path)
        except Exception:
            logger.warning("reuse: could not check %s in storage", path, exc_info=True)
            stored = False
        if stored:
            return ReusableOriginal(
                job_id=str(call.job_id),
                source_path=path,
                model=call.model,
                size=call.size,
                quality=call.quality,
                generated_at=call.created_at,
            )
    return None
