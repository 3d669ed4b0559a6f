"""Celery tasks for cleanup, on their own `cleanup` queue so they never wait behind images."""

from __future__ import annotations

from celery import shared_task

from cleanup import services
from jobs.models import TASK_FOR_KIND, JobKind


@shared_task(name=TASK_FOR_KIND[JobKind.FILE_CLEANUP])
def cleanup_task(job_id: str) -> None:
    services.cleanup_run(job_id=job_id)


@shared_task(name="cleanup.scheduled_cleanup", ignore_result=True)
def scheduled_cleanup_task() -> str:
    return str(services.cleanup_schedule().id)
