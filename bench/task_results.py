"""The result backend's writes per task: django-celery-results' stock backend (extended
results on, as the project had it; and off, for reference) against ours
(snapasset/core/result_backend.py), on the bench's own Postgres database.

Each task writes what a worker writes for a job task: STARTED, then SUCCESS; with
``--retry`` a RETRY (with its exception and traceback) comes between. Measured in the same
run, in alternating rounds: wall time and SQL statements per task, the row's bytes
(pg_column_size) and the table's growth with its indexes per task.

    python -m bench.task_results [--tasks 500] [--rounds 3] [--retry]
"""

from __future__ import annotations

import argparse
import time
import traceback
import uuid
from types import SimpleNamespace
from typing import Any

from bench._support import bench_env, machine, median, table

TABLE = "django_celery_results_taskresult"


def _request(task_id: str, *, retries: int = 0) -> Any:
    return SimpleNamespace(
        id=task_id, task="jobs.generate_images", args=[str(uuid.uuid4())], kwargs={},
        argsrepr=None, kwargsrepr=None, hostname="images@bench-host", retries=retries,
        children=[], periodic_task_name=None,
    )  # fmt: skip


def _retry_error() -> tuple[BaseException, str]:
    try:
        raise RuntimeError("The image model is unavailable (HTTP 503); retrying")
    except RuntimeError as exc:
        return exc, "".join(traceback.format_exception(exc))


def backends() -> dict[str, Any]:
    from django_celery_results.backends.database import DatabaseBackend

    from snapasset.celery import app
    from snapasset.core.result_backend import TaskResultBackend

    class StockNotExtended(DatabaseBackend):
        def _get_extended_properties(self, request: Any, traceback: Any) -> dict[str, Any]:
            return super()._get_extended_properties(None, traceback)

    return {
        "stock, extended (before)": DatabaseBackend(app=app),
        "stock, not extended": StockNotExtended(app=app),
        "ours (after)": TaskResultBackend(app=app),
    }


def run_tasks(backend: Any, count: int, *, retry: bool) -> tuple[float, int]:
    """Seconds and SQL statements for ``count`` tasks' writes."""
    from django.db import connection

    error, tb = _retry_error()
    queries = [0]

    def counted(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counted):
        started = time.perf_counter()
        for _ in range(count):
            task_id = str(uuid.uuid4())
            request = _request(task_id)
            backend.store_result(task_id, None, "STARTED", request=request)
            if retry:
                backend.store_result(task_id, error, "RETRY", traceback=tb, request=request)
                request = _request(task_id, retries=1)
                backend.store_result(task_id, None, "STARTED", request=request)
            backend.store_result(task_id, None, "SUCCESS", request=request)
        elapsed = time.perf_counter() - started
    return elapsed, queries[0]


def sizes() -> tuple[float, int]:
    """Mean row bytes, and the table's total size with indexes and TOAST."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {TABLE}")
        cursor.execute(f"SELECT avg(pg_column_size(t.*)) FROM {TABLE} t")
        row_bytes = float(cursor.fetchone()[0] or 0)
        cursor.execute(f"SELECT pg_total_relation_size('{TABLE}')")
        total = int(cursor.fetchone()[0])
    return row_bytes, total


def run(tasks: int, rounds: int, retry: bool) -> None:
    with bench_env():
        from django_celery_results.models import TaskResult

        candidates = backends()
        times: dict[str, list[float]] = {name: [] for name in candidates}
        statements: dict[str, int] = {}
        footprint: dict[str, tuple[float, float]] = {}
        for backend in candidates.values():  # warm-up: connections, code paths
            run_tasks(backend, 20, retry=retry)
        TaskResult.objects.all().delete()
        for _ in range(rounds):
            for name, backend in candidates.items():
                TaskResult.objects.all().delete()
                before = sizes()[1]
                seconds, queries = run_tasks(backend, tasks, retry=retry)
                row_bytes, after = sizes()
                times[name].append(seconds / tasks * 1000)
                statements[name] = round(queries / tasks)
                footprint[name] = (row_bytes, max(0, after - before) / tasks)
        TaskResult.objects.all().delete()

    sequence = "STARTED, RETRY, STARTED, SUCCESS" if retry else "STARTED, SUCCESS"
    baseline = median(times["stock, extended (before)"])
    rows = [
        [
            name,
            f"{median(times[name]):.2f}",
            f"{median(times[name]) / baseline:.2f}",
            statements[name],
            f"{footprint[name][0]:.0f}",
            f"{footprint[name][1]:.0f}",
        ]
        for name in candidates
    ]
    table(
        f"Result backend writes per task ({sequence}; {tasks} tasks x {rounds} rounds, "
        f"median) on {machine()}",
        ["backend", "ms per task", "vs before", "SQL statements", "row bytes", "table bytes"],
        rows,
    )
    print(
        "\n'table bytes': growth of the table with its indexes and TOAST per task (pages, so"
        " coarse); 'row bytes': pg_column_size of the row."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--retry", action="store_true", help="a RETRY between (4 writes)")
    args = parser.parse_args(argv)
    run(args.tasks, args.rounds, args.retry)


if __name__ == "__main__":
    main()
