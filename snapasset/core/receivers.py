"""Celery signal receivers every worker and beat process needs, connected in
CoreConfig.ready()."""

from __future__ import annotations

from contextvars import Token
from typing import Any

from snapasset.core.logs import current_request_id

# The Celery message header that carries the id of the HTTP request that caused the task.
REQUEST_ID_HEADER = "request_id"
_request_log_tokens: dict[str, Token[str | None]] = {}


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


def add_request_id_to_message(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """`before_task_publish`: a message sent while a request (or a task that a request
    caused) runs carries its request id. A retry keeps the header of the message it retries."""
    request_id = current_request_id.get()
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


def enter_request_log_context(task_id: str = "", task: Any = None, **_: Any) -> None:
    """`task_prerun`: the task's log lines carry the request id of its message."""
    request_id = getattr(getattr(task, "request", None), REQUEST_ID_HEADER, None)
    if request_id:
        _request_log_tokens[task_id] = current_request_id.set(str(request_id))


def leave_request_log_context(task_id: str = "", **_: Any) -> None:
    token = _request_log_tokens.pop(task_id, None)
    if token is not None:
        current_request_id.reset(token)
