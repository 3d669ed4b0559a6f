"""Celery signal receivers of jobs, connected in JobsConfig.ready(): every log line of a
task that runs a job carries its `job_id`, Celery's own lines included."""

from __future__ import annotations

from contextvars import Token
from typing import Any

from jobs.models import TASK_FOR_KIND
from snapasset.core.logs import current_job_id

# Tasks whose first argument is a job id.
JOB_TASKS = frozenset(TASK_FOR_KIND.values())
_job_log_tokens: dict[str, Token[str | None]] = {}


def enter_job_log_context(
    task_id: str = "", task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    if task is None or task.name not in JOB_TASKS:
        return
    job_id = (args[0] if args else None) or (kwargs or {}).get("job_id")
    if job_id:
        _job_log_tokens[task_id] = current_job_id.set(str(job_id))


def leave_job_log_context(task_id: str = "", **_: Any) -> None:
    token = _job_log_tokens.pop(task_id, None)
    if token is not None:
        current_job_id.reset(token)
