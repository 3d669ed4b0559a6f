"""Reads of jobs, always scoped to what the user may see (owner, or staff for all)."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, QuerySet

from jobs.models import Job, JobKind, JobStatus
from snapasset.core.exceptions import NotFoundError

User = AbstractBaseUser | AnonymousUser


def job_visible_queryset(*, user: Any) -> QuerySet[Job]:
    queryset = Job.objects.select_related("owner")
    if user.is_staff:
        return queryset
    return queryset.filter(owner=user)


def job_get_for_user(*, job_id: str, user: Any) -> Job:
    """The job if the user may see it; another user's job is a 404, like a missing one."""
    try:
        parsed = uuid.UUID(str(job_id))
    except ValueError:
        raise NotFoundError("Job not found") from None
    job = job_visible_queryset(user=user).filter(pk=parsed).first()
    if job is None:
        raise NotFoundError("Job not found")
    return job


def job_list_for_user(
    *,
    user: Any,
    statuses: list[str] | None,
    limit: int,
    offset: int = 0,
    kind: str | None = None,
) -> tuple[list[Job], int]:
    queryset = job_visible_queryset(user=user)
    if statuses:
        queryset = queryset.filter(status__in=statuses)
    if kind:
        queryset = queryset.filter(kind=kind)
    total = queryset.count()
    jobs = list(queryset.order_by("-created_at")[offset : offset + limit])
    return jobs, total


def job_stats(*, user: Any | None) -> dict[str, dict[str, int]]:
    """Counts per kind and status: all jobs for staff (or user=None), own jobs otherwise."""
    queryset = Job.objects.all()
    if user is not None and not user.is_staff:
        queryset = queryset.filter(owner=user)
    counts = {kind: {status: 0 for status in JobStatus.values} for kind in JobKind.values}
    for row in queryset.values("kind", "status").annotate(n=Count("id")).order_by():
        counts[row["kind"]][row["status"]] = row["n"]
    return {
        "imageGeneration": counts[JobKind.IMAGE_GENERATION],
        "fileCleanup": counts[JobKind.FILE_CLEANUP],
    }
