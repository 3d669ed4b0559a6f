"""The Celery application: configured from Django settings (CELERY_*), tasks autodiscovered."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")

app = Celery("snapasset")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Tasks whose first argument is a job id: their log lines carry `job_id`.
JOB_TASKS = frozenset({"jobs.generate_images", "cleanup.run_cleanup"})
_job_log_tokens: dict[str, Any] = {}


@signals.setup_logging.connect
def _use_django_logging(**_: Any) -> None:
    """Workers and beat log through settings.LOGGING (JSON/text, files, job_id), not
    Celery's own handlers: a receiver here makes Celery leave logging alone."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@signals.task_prerun.connect
@signals.task_postrun.connect
def _release_database_connections(**_: Any) -> None:
    """Around each task, what Django does around each request: connections go back to the
    pool, or are dropped when broken (CELERY_DB_REUSE_MAX keeps Celery from closing the
    pool itself every task)."""
    from django.db import close_old_connections

    close_old_connections()


@signals.task_prerun.connect
def _enter_job_log_context(
    task_id: str = "", task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    if task is None or task.name not in JOB_TASKS:
        return
    from snapasset.core.logs import current_job_id

    job_id = (args[0] if args else None) or (kwargs or {}).get("job_id")
    if job_id:
        _job_log_tokens[task_id] = current_job_id.set(str(job_id))


@signals.task_postrun.connect
def _leave_job_log_context(task_id: str = "", **_: Any) -> None:
    token = _job_log_tokens.pop(task_id, None)
    if token is not None:
        from snapasset.core.logs import current_job_id

        current_job_id.reset(token)


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **kwargs: Any) -> None:
    from snapasset.ops import heartbeat, metrics_server

    heartbeat.on_worker_ready(sender=sender, **kwargs)
    metrics_server.start_for_worker()


@signals.heartbeat_sent.connect
def _heartbeat_sent(sender: Any = None, **kwargs: Any) -> None:
    from snapasset.ops import heartbeat

    heartbeat.on_heartbeat_sent(sender=sender, **kwargs)


@signals.worker_shutdown.connect
def _worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    from snapasset.ops import heartbeat

    heartbeat.on_worker_shutdown(sender=sender, **kwargs)
