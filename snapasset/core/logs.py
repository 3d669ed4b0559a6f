"""Logging: one configuration for web, worker and beat, with the job id on every line of a job.

``job_id`` lives in a contextvar. The Celery task signals (``task_prerun`` /
``task_postrun``, receivers in jobs/receivers.py) set it around each job task, so every line
logged while a job runs, ours and Celery's own ("Task ... succeeded"), carries it; services
may also use :func:`job_log_context` directly. Handler filters (not logger filters, so they
see records of every logger) add the id, redact secrets and shorten prompts.
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


@contextmanager
def job_log_context(job_id: object) -> Iterator[None]:
    token = current_job_id.set(str(job_id))
    try:
        yield
    finally:
        current_job_id.reset(token)


class JobContextFilter(logging.Filter):
    """Put the running job's id on the record (None outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job_id.get()
        return True


class TextFormatter(logging.Formatter):
    """Readable lines for development: ``time LEVEL logger [job=<id>] message``."""

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.job_tag = f" [job={job_id}]" if job_id else ""
        return redact(super().format(record))


class JobJsonFormatter(JsonFormatter):
    """One JSON object per line; ``job_id`` only when the line belongs to a job."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        if log_data.get("job_id") is None:
            log_data.pop("job_id", None)
        log_data.pop("job_tag", None)
        if "exc_info" in log_data:
            log_data["exc_info"] = redact(str(log_data["exc_info"]))


def build_logging(*, level: str, fmt: str, log_dir: str | None) -> dict[str, Any]:
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
            "uvicorn.access": _uvicorn_access_logger(),
        },
    }


def _uvicorn_access_logger() -> dict[str, Any]:
    """Through our handlers, unless uvicorn runs with --no-access-log: it then leaves its
    access logger with no handler and not propagating (before Django loads this config),
    and configuring "uvicorn" above would otherwise turn that logger back on."""
    access = logging.getLogger("uvicorn.access")
    if not access.handlers and not access.propagate:
        return {"handlers": [], "propagate": False}
    return {"handlers": [], "propagate": True}


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
