"""What other parts of the project may listen to about jobs, sent after the change commits.

Receivers (webhooks, mirrors of job state elsewhere) are connected in their AppConfig's
``ready()``. They are called with ``send_robust``: a receiver that raises is logged and never
undoes or fails the job's own change.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# A job reached a final status (completed, failed or cancelled). Arguments: ``job_id`` (str)
# and ``status`` (str). A retried job that ends again sends it again.
job_finished = Signal()
# A job's status changed (every move of jobs.services.transitions, and a new job's first
# status). Arguments: ``job_id`` (str), ``status`` (str) and ``previous_status`` (str, or
# None for a new job). For mirrors of job state elsewhere.
job_status_changed = Signal()
# The same moves, sent INSIDE the transaction that makes them, before it commits: for a
# transactional outbox (jobs/supabase_sync), whose rows must commit or roll back with the
# change. Arguments: ``job`` (the Job as it now is, in memory) and ``previous_status`` (str,
# or None for a new job). A receiver only writes to this database, quickly: no network.
job_status_changing = Signal()


def send_in_transaction(signal: Signal, **kwargs: object) -> None:
    """Send ``signal`` now, inside the caller's transaction; a receiver that raises is logged."""
    for receiver, result in signal.send_robust(sender=None, **kwargs):
        if isinstance(result, Exception):
            logger.error("receiver %r of a job signal failed", receiver, exc_info=result)


def send_after_commit(signal: Signal, **kwargs: object) -> None:
    """Send ``signal`` once the current transaction commits (at once outside one)."""

    def send() -> None:
        for receiver, result in signal.send_robust(sender=None, **kwargs):
            if isinstance(result, Exception):
                logger.error("receiver %r of a job signal failed", receiver, exc_info=result)

    transaction.on_commit(send)
