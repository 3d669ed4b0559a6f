"""A job's Celery tasks, as django-celery-results records them (one TaskResult row per task
id: its last state, worker, times, traceback).

A job task's one argument is the job id (TASK_FOR_KIND), so a row belongs to a job by its
stored arguments, whatever the task id: the result backend (snapasset/core/result_backend.py)
stores them as ``["<job id>"]``, indexed for job tasks (ops migration 0001); rows written by
the stock backend stored the repr, ``"['<job id>']"``, and match too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django_celery_results.models import TaskResult

from jobs.models import TASK_FOR_KIND

JOB_TASK_NAMES = tuple(sorted(TASK_FOR_KIND.values()))


def stored_args_for(job_id: object) -> list[str]:
    """The ways a job task's arguments are stored: ours, then the stock backend's."""
    job_id = str(job_id)
    return [json.dumps([job_id], separators=(",", ":")), json.dumps(repr([job_id]))]


def job_task_results(job_id: object) -> QuerySet[TaskResult]:
    """The job's task rows, newest first."""
    return TaskResult.objects.filter(
        Q(task_name__in=JOB_TASK_NAMES) & Q(task_args__in=stored_args_for(job_id))
    ).order_by("-date_created")


@dataclass(frozen=True)
class TaskError:
    exc_type: str
    message: str


def task_error(task: TaskResult) -> TaskError | None:
    """The exception a FAILURE or RETRY row recorded (Celery's JSON of it), else None."""
    if task.status not in ("FAILURE", "RETRY") or not task.result:
        return None
    try:
        data: Any = json.loads(task.result)
    except ValueError:
        return TaskError("?", str(task.result)[:500])
    if not isinstance(data, dict):
        return TaskError("?", str(data)[:500])
    message = data.get("exc_message", "")
    if isinstance(message, list | tuple):
        message = " ".join(str(part) for part in message)
    return TaskError(str(data.get("exc_type", "?")), str(message)[:500])


def task_retries(task: TaskResult) -> int:
    """Times the task had been retried when it reached its recorded state."""
    try:
        meta = json.loads(task.meta) if task.meta else {}
    except ValueError:
        return 0
    return int(meta.get("retries", 0)) if isinstance(meta, dict) else 0


def task_runtime(task: TaskResult) -> timedelta | None:
    if task.date_started is None or task.status in ("STARTED", "PENDING", "RECEIVED"):
        return None
    return task.date_done - task.date_started
