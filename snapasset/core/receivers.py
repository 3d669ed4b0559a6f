"""Celery signal receivers every worker and beat process needs, connected in
CoreConfig.ready()."""

from __future__ import annotations

from typing import Any


def use_django_logging(**_: Any) -> None:
    """Workers and beat log through settings.LOGGING (JSON/text, files, job_id), not
    Celery's own handlers: a receiver of `setup_logging` makes Celery leave logging alone."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


def release_database_connections(**_: Any) -> None:
    """Around each task, what Django does around each request: connections go back to the
    pool, or are dropped when broken (CELERY_DB_REUSE_MAX keeps Celery from closing the
    pool itself every task)."""
    from django.db import close_old_connections

    close_old_connections()
