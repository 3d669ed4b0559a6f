"""Celery tasks for jobs: thin, they take a job id and call a service."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from jobs.models import TASK_FOR_KIND, JobKind
from jobs.services.generation import job_run_generation
from jobs.services.sweeper import jobs_sweep


@shared_task(bind=True, name=TASK_FOR_KIND[JobKind.IMAGE_GENERATION], max_retries=None)
def generate_images_task(self: Task, job_id: str) -> None:
    countdown = job_run_generation(job_id=job_id)
    if countdown is not None:
        # The Job row already says `delayed` with its retry time (or another attempt holds
        # it until its lease ends); this message is the wake-up call (and the sweeper
        # resends it if the broker loses it).
        raise self.retry(countdown=countdown)


@shared_task(name="jobs.sweep", ignore_result=True)
def sweep_jobs_task() -> dict[str, Any]:
    return jobs_sweep()
