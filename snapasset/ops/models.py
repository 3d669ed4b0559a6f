"""Operators' views of the jobs' data (no tables of their own)."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from jobs.models import Job, JobStatus


class FailedJobManager(models.Manager["FailedJob"]):
    def get_queryset(self) -> models.QuerySet[FailedJob]:
        return super().get_queryset().filter(status=JobStatus.FAILED)


class FailedJob(Job):
    """The dead letters: jobs that failed for good, with their tasks' errors and tracebacks,
    for staff to inspect and retry (snapasset/ops/admin.py)."""

    objects: ClassVar[FailedJobManager] = FailedJobManager()

    class Meta:
        proxy = True
        verbose_name = "failed job (dead letter)"
        verbose_name_plural = "failed jobs (dead letters)"
