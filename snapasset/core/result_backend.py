"""Celery's result backend: django-celery-results' TaskResult rows, written leaner.

Every task's state stays recorded in the database (STARTED, RETRY, SUCCESS, FAILURE with its
traceback), as django-celery-results does, with the extended fields that make a row useful
to people: the task's name, the worker, and its arguments, which for a job task are the job
id (how the admin links a job to its tasks: jobs/task_results.py). What changes:

- one statement per state change, ``INSERT ... ON CONFLICT (task_id) DO UPDATE``, where the
  stock manager runs a SELECT then an INSERT (in a savepoint) or an UPDATE of every column;
- the arguments are stored as the JSON of the arguments (``["<job id>"]``: exact, indexable
  match) instead of the JSON of their Python repr (``"['<job id>']"``), and empty keyword
  arguments and empty meta are not stored (NULL) rather than ``{}`` and ``{"children": []}``;
- ``meta`` keeps Celery's children when there are some, and says ``retries`` (how many times
  the task was retried before this state) once it is not 0, which the row alone cannot say
  since a retry keeps the task id.

bench/task_results.py measures both backends' writes (bytes and time per task).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connections, router
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

# Written on every state change; date_started only on STARTED, date_created only on insert.
UPDATED_FIELDS = [
    "status", "result", "traceback", "meta", "content_type", "content_encoding",
    "task_name", "task_args", "task_kwargs", "worker", "periodic_task_name", "date_done",
]  # fmt: skip


def _json_or_none(value: Any) -> str | None:
    if value is None or value == {} or value == []:
        return None
    return json.dumps(value, separators=(",", ":"), default=str)


class TaskResultBackend(DatabaseBackend):
    """``CELERY_RESULT_BACKEND`` (settings): django-celery-results' backend, one upsert per
    state change and no redundant bytes."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        content_type, content_encoding, encoded = self.encode_content(result)
        meta: dict[str, Any] = dict(self._get_meta_from_request(request) or {})
        children = self.current_task_children(request)
        if children:
            meta["children"] = children
        retries = getattr(request, "retries", 0) or 0
        if retries:
            meta["retries"] = retries
        values: dict[str, Any] = {
            "task_id": task_id,
            "status": status,
            "result": encoded,
            "traceback": traceback,
            "meta": _json_or_none(meta),
            "content_type": content_type,
            "content_encoding": content_encoding,
            "task_name": getattr(request, "task", None),
            "task_args": _json_or_none(getattr(request, "args", None)),
            "task_kwargs": _json_or_none(getattr(request, "kwargs", None)),
            "worker": getattr(request, "hostname", None),
            "periodic_task_name": getattr(request, "periodic_task_name", None),
        }
        _upsert(values, started=status == "STARTED", using=using)
        return encoded


def _upsert(values: dict[str, Any], *, started: bool, using: str | None) -> None:
    """The row's one statement, written as SQL (the ORM's bulk_create upsert cost more CPU to
    build than the database to run, twice per task in the worker)."""
    connection = connections[using or router.db_for_write(TaskResult)]
    now = timezone.now()
    values = {**values, "date_done": now}
    fields = list(UPDATED_FIELDS)
    if started:
        values["date_started"] = now
        fields.append("date_started")
    if connection.vendor not in ("postgresql", "sqlite"):
        TaskResult._default_manager.using(connection.alias).bulk_create(
            [TaskResult(**values)], update_conflicts=True, unique_fields=["task_id"],
            update_fields=fields,
        )  # fmt: skip
        return
    values["date_created"] = now
    quote = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    columns = list(values)
    params = [adapt(v) if isinstance(v, datetime) else v for v in values.values()]
    sql = (
        f"INSERT INTO {quote(TaskResult._meta.db_table)} ({', '.join(map(quote, columns))})"
        f" VALUES ({', '.join(['%s'] * len(columns))})"
        f" ON CONFLICT ({quote('task_id')}) DO UPDATE SET "
        + ", ".join(f"{quote(name)} = EXCLUDED.{quote(name)}" for name in fields)
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
