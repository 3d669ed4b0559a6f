"""Where a job's CPU outside the image work goes: the job body run in this process (the
provider and the renders stubbed, as in bench.worker's CPU figure), with its SQL statements,
live events and file saves each wrapped and timed on the job's thread.

    python -m bench.breakdown [--jobs 60] [--rounds 3]

Prints, per round, the process's and the job thread's CPU per job and each part's CPU and
calls per job; what is left on the job's thread is Python between those calls.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench._support import BenchEnv, bench_env, machine, median, table

SQL = "SQL statements (Django's cursor + psycopg)"
EVENTS = "live events (store + publish, one EVALSHA)"
SAVES = "file saves (storage._save)"


class Parts:
    """CPU seconds and calls per part, on the calling thread."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def timing(self, part: str) -> Iterator[None]:
        start = time.thread_time()
        try:
            yield
        finally:
            self.cpu[part] = self.cpu.get(part, 0.0) + time.thread_time() - start
            self.calls[part] = self.calls.get(part, 0) + 1


def _wrap(owner: Any, name: str, part: str, parts: Parts) -> Callable[[], None]:
    """Time ``owner.name`` as ``part``; returns the undo."""
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        with parts.timing(part):
            return original(*args, **kwargs)

    setattr(owner, name, timed)
    return lambda: setattr(owner, name, original)


def measure(env: BenchEnv, jobs: int, rounds: int) -> list[dict[str, float]]:
    from django.contrib.auth import get_user_model
    from django.core.files.storage import storages
    from django.db import connection

    from bench import signals
    from bench.worker import _new_jobs
    from jobs.live.storage import LiveEventStorage
    from jobs.platforms import PLATFORM_IDS
    from jobs.services.generation import job_run_generation

    os.environ["BENCH_STUB_IMAGE"] = "1"
    signals.stub_image_work()
    parts = Parts()
    storage = storages["default"]  # the object behind default_storage's lazy proxy
    undo = [
        _wrap(type(storage), "_save", SAVES, parts),
        _wrap(LiveEventStorage, "append_and_publish", EVENTS, parts),
    ]

    def sql(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        with parts.timing(SQL):
            return execute(sql, params, many, context)

    owner, _ = get_user_model().objects.get_or_create(username="bench-breakdown")
    platforms = list(PLATFORM_IDS)
    for job in _new_jobs(owner, 10, platforms):  # warm-up
        job_run_generation(job_id=str(job.id))
    results = []
    try:
        for _ in range(rounds):
            parts.cpu.clear()
            parts.calls.clear()
            batch = _new_jobs(owner, jobs, platforms)
            with connection.execute_wrapper(sql):
                thread_start, process_start = time.thread_time(), time.process_time()
                for job in batch:
                    job_run_generation(job_id=str(job.id))
                thread = time.thread_time() - thread_start
                process = time.process_time() - process_start
            row = {"process": process / jobs * 1000, "thread": thread / jobs * 1000}
            for part in (SQL, EVENTS, SAVES):
                row[part] = parts.cpu.get(part, 0.0) / jobs * 1000
                row[f"{part} calls"] = parts.calls.get(part, 0) / jobs
            row["other Python on the job's thread"] = row["thread"] - sum(
                row[part] for part in (SQL, EVENTS, SAVES)
            )
            results.append(row)
            env.finish_pending_jobs()
    finally:
        for step in undo:
            step()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with bench_env() as env:
        results = measure(env, args.jobs, args.rounds)
    keys = ["process", "thread", SQL, EVENTS, SAVES, "other Python on the job's thread"]
    labels = {
        "process": "CPU per job, the whole process",
        "thread": "CPU per job, the job's thread",
    }
    rows = []
    for key in keys:
        values = [r[key] for r in results]
        calls = (
            f" ({median([r[f'{key} calls'] for r in results]):.1f} calls)"
            if (f"{key} calls" in results[0])
            else ""
        )
        rows.append(
            [labels.get(key, key), f"{median(values):.2f} ms{calls}"] + [f"{v:.2f}" for v in values]
        )
    table(
        f"Worker CPU per 6-platform job outside the image work, in-process ({machine()})",
        ["part", "median", *[f"round {n + 1}" for n in range(len(results))]],
        rows,
    )


if __name__ == "__main__":
    main()
