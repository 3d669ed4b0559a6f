"""The baseline task: a Celery no-op, on the same broker and worker settings as the jobs."""

from __future__ import annotations

import time

from celery import shared_task


@shared_task(name="bench.noop")
def noop_task(sent_at: float | str = 0.0) -> float:
    return time.time()
