"""The jobs' Prometheus instruments: events counted where they happen (the services call these).

Jobs submitted / completed / failed / cancelled, job and step durations and provider errors
happen in web processes and in worker pool processes. They are prometheus_client counters
and histograms in multiprocess mode: every process writes its own mmap file under
PROMETHEUS_MULTIPROC_DIR, and a scrape (snapasset.ops.metrics) sums the files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from prometheus_client import Counter, Histogram

from jobs.models import JobStatus

logger = logging.getLogger(__name__)

JOBS_SUBMITTED = Counter("snapasset_jobs_submitted", "Jobs submitted", ["kind"])
JOBS_COMPLETED = Counter("snapasset_jobs_completed", "Jobs completed", ["kind"])
JOBS_FAILED = Counter("snapasset_jobs_failed", "Jobs failed for good", ["kind"])
JOBS_CANCELLED = Counter("snapasset_jobs_cancelled", "Jobs cancelled", ["kind"])
_FINISHED_COUNTERS: dict[str, Counter] = {
    JobStatus.COMPLETED: JOBS_COMPLETED,
    JobStatus.FAILED: JOBS_FAILED,
    JobStatus.CANCELLED: JOBS_CANCELLED,
}
# From submission to the end, what a user waits: queueing, retries and the work.
JOB_DURATION = Histogram(
    "snapasset_job_duration_seconds",
    "Time from submission to a final state",
    ["kind", "status"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, float("inf")),
)
STEP_DURATION = Histogram(
    "snapasset_job_step_duration_seconds",
    "Time of one pipeline step (generate: the image model; render: resize+encode; store)",
    ["step"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, float("inf")),
)
PROVIDER_ERRORS = Counter(
    "snapasset_provider_errors",
    "Errors of the image provider by class",
    ["provider", "error_class"],
)


# --- Recording (called by services) ----------------------------------------------------------


def _after_commit(callback: Any) -> None:
    # Only what the database kept is counted; outside a transaction this runs at once.
    def safe() -> None:
        try:
            callback()
        except Exception:  # metrics never break a job
            logger.warning("could not record a metric", exc_info=True)

    transaction.on_commit(safe)


def record_job_submitted(*, kind: str) -> None:
    _after_commit(lambda: JOBS_SUBMITTED.labels(kind=kind).inc())


def record_job_finished(*, kind: str, status: str, created_at: Any, finished_at: Any) -> None:
    counter = _FINISHED_COUNTERS.get(str(status))
    if counter is None:
        return

    def record() -> None:
        counter.labels(kind=kind).inc()
        if created_at is not None and finished_at is not None:
            seconds = max(0.0, (finished_at - created_at).total_seconds())
            JOB_DURATION.labels(kind=kind, status=str(status)).observe(seconds)

    _after_commit(record)


@contextmanager
def observe_step(step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        STEP_DURATION.labels(step=step).observe(time.perf_counter() - started)


def record_provider_error(*, provider: str, error: BaseException) -> None:
    PROVIDER_ERRORS.labels(provider=provider, error_class=error.__class__.__name__).inc()
