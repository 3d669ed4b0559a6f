"""Warm shutdown of a worker, seen from inside the pool processes that run the jobs.

Celery handles SIGTERM in the worker's main process (``worker_shutting_down``) and then
waits for the running tasks; the pool processes that run them are never told. The time of
the SIGTERM is kept in a double in shared memory created at import, i.e. in the main
process before the pool forks (JobsConfig.ready imports this module), so every pool process
(and a solo/threads pool) reads it: the pipeline stops after its current step and gives the
job back to the queue, and the heartbeat thread releases a job whose step outlives
``JOB_SHUTDOWN_GRACE_SECONDS``.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from typing import Any

logger = logging.getLogger(__name__)

# 0.0 while running; the wall-clock time of the first SIGTERM afterwards.
_shutdown_started_at = multiprocessing.RawValue("d", 0.0)


def on_worker_shutting_down(**_: Any) -> None:
    """The `worker_shutting_down` receiver (JobsConfig.ready), in the worker's main process."""
    if not _shutdown_started_at.value:
        _shutdown_started_at.value = time.time()


def worker_shutdown_started_at() -> float | None:
    """When this worker was asked to stop, or None while it runs normally."""
    return _shutdown_started_at.value or None


def worker_is_shutting_down() -> bool:
    return bool(_shutdown_started_at.value)
