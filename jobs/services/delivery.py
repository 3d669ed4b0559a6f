"""Sending a job's Celery message: the wake-up call, never the truth.

Each send has a delivery id of its own, ``<job id>.<random>``, as its Celery task id; the
job id is the task's argument. A revoked delivery (an operator in Flower) is only that one
message: a later send of the same job (a retry, the sweeper) is a new delivery that no
worker's list of revoked ids knows. The broker reader (jobs.broker) maps a message back to
its job by the part before the dot (a plain job id, as messages sent before this scheme
carried, maps to itself).
"""

from __future__ import annotations

import logging
import uuid

from celery import current_app
from django.db import transaction

from jobs.models import TASK_FOR_KIND, Job, JobKind
from snapasset.core.redis_clients import outage_known, record_outage

logger = logging.getLogger(__name__)

# The send of a request path (submit, cancel/retry) gives up this soon: a frozen or
# unreachable broker must not hold the answer (the row is committed; the sweeper sends the
# message once it is overdue).
SEND_RETRIES = 1


def celery_priority(priority: int) -> int:
    """API priority (higher first, 0..9) to Redis priority (0 is served first)."""
    return 9 - max(0, min(9, priority))


def delivery_id(job_id: str) -> str:
    """A new Celery task id for one send of ``job_id``."""
    return f"{job_id}.{uuid.uuid4().hex[:12]}"


def job_enqueue_on_commit(job: Job) -> None:
    job_id, kind, priority = str(job.id), job.kind, job.priority
    transaction.on_commit(lambda: job_send_message(job_id=job_id, kind=kind, priority=priority))


def job_send_message(
    *, job_id: str, kind: str, priority: int, countdown: float | None = None
) -> bool:
    """Send a new delivery of a job's message. A broker outage is logged, not raised: the row
    is committed and the sweeper sends the message again once it is overdue. While an outage
    of the broker is known (a send or a ping timed out a moment ago), it is not tried."""
    if outage_known(current_app.conf.broker_url):
        logger.warning("broker unavailable; job %s stays waiting for the sweeper", job_id)
        return False
    try:
        current_app.send_task(
            TASK_FOR_KIND[JobKind(kind)],
            args=[job_id],
            task_id=delivery_id(job_id),
            priority=celery_priority(priority),
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": SEND_RETRIES, "interval_start": 0, "interval_step": 0.2},
        )
    except Exception:
        record_outage(current_app.conf.broker_url)
        logger.warning(
            "broker unavailable; job %s stays waiting for the sweeper", job_id, exc_info=True
        )
        return False
    return True
