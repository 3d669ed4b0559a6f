"""Logging: one configuration for web, worker and beat, with the job id on every line of a job
and the request id on every line of a request and of the tasks it caused.

``job_id`` lives in a contextvar. The Celery task signals (``task_prerun`` /
``task_postrun``, receivers in jobs/receivers.py) set it around each job task, so every line
logged while a job runs, ours and Celery's own ("Task ... succeeded"), carries it; services
may also use :func:`job_log_context` directly. ``request_id`` too: the access-log middleware
(snapasset/core/access_log.py) sets it for a request, the message a request sends carries it
(a Celery header) and the worker sets it around that task (snapasset/core/receivers.py).
Handler filters (not logger filters, so they see records of every logger) add the ids,
redact secrets and shorten prompts.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from snapasset.core.log_redaction import redact_secrets as redact
from snapasset.core.log_redaction import truncate_prompt  # noqa: F401  (re-exported)

current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_job_id", default=None
)


# The request a line belongs to: set by the access-log middleware in the web process, and
# around a task sent by that request in the worker.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_request_id", default=None
)


@contextmanager
def job_log_context(job_id: object) -> Iterator[None]:
    token = current_job_id.set(str(job_id))
    try:
        yield
    finally:
        current_job_id.reset(token)


class JobContextFilter(logging.Filter):
    """Put the running job's id and the request's id on the record (None outside them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job_id.get()
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """Readable lines for development: ``time LEVEL logger [job=<id> req=<id>] message``."""

    def format(self, record: logging.LogRecord) -> str:
        tags = [
            f"{name}={value}"
            for name, value in (
                ("job", getattr(record, "job_id", None)),
                ("req", getattr(record, "request_id", None)),
            )
            if value
        ]
        record.job_tag = f" [{' '.join(tags)}]" if tags else ""
        return redact(super().format(record))


class JobJsonFormatter(JsonFormatter):
    """One JSON object per line; ``job_id`` and ``request_id`` only when the line belongs to
    a job or a request."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for name in ("job_id", "request_id"):
            if log_data.get(name) is None:
                log_data.pop(name, None)
        log_data.pop("job_tag", None)
        if "exc_info" in log_data:
            log_data["exc_info"] = redact(str(log_data["exc_info"]))


def build_logging(
    *, level: str, fmt: str, log_dir: str | None, access_log: bool = True
) -> dict[str, Any]:
    """The LOGGING dict: stdout always, plus rotating files when ``log_dir`` is set.

    Web, worker and beat (and a worker's pool processes) write the same files, so the
    handler is concurrent-log-handler's, which takes a lock file around writes and rotation;
    the standard RotatingFileHandler would have each process rotate on its own and lose lines.
    """
    filters = ["job_context", "redact"]
    handlers: dict[str, Any] = {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": fmt,
            "filters": filters,
        }
    }
    if log_dir:
        for name, file_name, file_level in (
            ("combined_file", "combined.log", level),
            ("error_file", "error.log", "ERROR"),
        ):
            handlers[name] = {
                "class": "concurrent_log_handler.ConcurrentRotatingFileHandler",
                "filename": f"{log_dir}/{file_name}",
                "maxBytes": 10 * 1024 * 1024,
                "backupCount": 5,
                "encoding": "utf-8",
                "level": file_level,
                # Files are for machines (grep, shipping): always JSON.
                "formatter": "json",
                "filters": filters,
            }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "job_context": {"()": "snapasset.core.logs.JobContextFilter"},
            "redact": {"()": "snapasset.core.log_redaction.RedactSecretsFilter"},
        },
        "formatters": {
            "text": {
                "()": "snapasset.core.logs.TextFormatter",
                "format": "%(asctime)s %(levelname)s %(name)s%(job_tag)s %(message)s",
            },
            "json": {
                "()": "snapasset.core.logs.JobJsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "timestamp", "levelname": "level", "name": "logger"},
            },
        },
        "handlers": handlers,
        "root": {"handlers": list(handlers), "level": level},
        "loggers": {
            # Django's default config gives "django" a console handler of its own (DEBUG
            # only): reset it so each line is written once, by the handlers above.
            "django": {"handlers": [], "level": "INFO", "propagate": True},
            "django.db.backends": {"level": "INFO"},
            # uvicorn configures its own loggers (at INFO); send them through ours, at ours.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # Our access line (snapasset.access: route, user, duration, request id) replaces
            # uvicorn's, which would say the same request again with less: it is off whether
            # or not uvicorn runs with --no-access-log. ACCESS_LOG=false turns ours off.
            "uvicorn.access": {"handlers": [], "propagate": False},
            "snapasset.access": {"handlers": [], "propagate": access_log},
        },
    }


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("snapasset.uncaught").critical(
        "uncaught exception", exc_info=(exc_type, exc, tb)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    logging.getLogger("snapasset.uncaught").critical(
        "uncaught exception in thread %s",
        getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def install_excepthooks() -> None:
    """Uncaught exceptions (main thread and others) go to the logs, so to error.log."""
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
