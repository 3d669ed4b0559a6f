"""The sweeper (beat, every JOB_SWEEP_INTERVAL_SECONDS, on the `cleanup` queue): messages the
broker lost are sent again, and jobs whose attempt stopped showing life are re-run.

Both passes go oldest first through every job that qualifies, page by page, so no backlog of
newer jobs starves an older one; each run does at most SWEEP_RUN_LIMIT of each, and the next
run goes on where it stopped (a job handled once is no longer overdue or stalled).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from jobs import broker
from jobs.models import Job, JobStatus
from jobs.services.delivery import job_enqueue_on_commit, job_send_message
from jobs.services.lease import job_fail_stalled
from jobs.services.outputs import job_remove_cancelled_outputs
from jobs.services.transitions import job_transition

logger = logging.getLogger(__name__)

# Jobs read per query (keyset pages, oldest first).
SWEEP_PAGE = 500
# Resends (and stall recoveries) per run: a broker that lost 50,000 messages is refilled
# over a few runs instead of one run outliving its time limit.
SWEEP_RUN_LIMIT = 5000
# The pause before the sweeper's second look (see _resend_lost_messages).
SWEEP_RECHECK_SECONDS = 0.5


def jobs_sweep() -> dict[str, int]:
    """Send again the messages of waiting/delayed jobs that are overdue and missing from the
    broker (a broker that lost its data loses no job); re-run active jobs whose heartbeat
    stopped, at most JOB_MAX_STALLED_COUNT times, then fail them."""
    now = timezone.now()
    resent = _resend_lost_messages(now)
    stalled, failed = _recover_stalled(now)
    cleared = _clear_cancelled_leftovers(now)
    if resent or stalled or failed or cleared:
        logger.info(
            "sweeper: resent %d, re-queued %d stalled, failed %d, cleared %d cancelled",
            resent, stalled, failed, cleared,
        )  # fmt: skip
    return {"resent": resent, "stalled": stalled, "failedStalled": failed}


def _clear_cancelled_leftovers(now: datetime) -> int:
    """Files of cancelled jobs that no attempt is left to remove: cancelled between attempts
    while their message was lost, or cancelled while running on a worker that then died
    (its heartbeat stopped for twice the lease). Fenced like the attempt's own removal."""
    stale = now - timedelta(seconds=settings.JOB_LEASE_SECONDS * 2)
    leftovers = (
        Job.objects.filter(status=JobStatus.CANCELLED)
        .filter(Q(claim_token__isnull=True) | Q(heartbeat_at__lt=stale) | Q(heartbeat_at=None))
        .filter(Q(images__isnull=False) | ~Q(source_path=""))
        .filter(finished_at__lt=stale)
        .select_related("owner")
        .distinct()
        .order_by("finished_at")[:SWEEP_PAGE]
    )
    cleared = 0
    for job in leftovers:
        if job_remove_cancelled_outputs(job, token=job.claim_token):
            cleared += 1
    return cleared


def _overdue(now: datetime) -> QuerySet[Job]:
    overdue = now - timedelta(seconds=settings.JOB_ENQUEUE_OVERDUE_SECONDS)
    return Job.objects.filter(
        Q(status=JobStatus.WAITING, enqueued_at__lt=overdue)
        | Q(status=JobStatus.DELAYED, retry_at__lt=overdue)
    )


def _oldest_first(
    queryset: QuerySet[Job], *, limit: int | None = None
) -> Iterator[list[tuple[str, str, int]]]:
    """Pages of (id, kind, priority), oldest job first, through the whole queryset (or its
    first ``limit`` rows)."""
    after: tuple[datetime, str] | None = None
    seen = 0
    while limit is None or seen < limit:
        page_query = queryset.order_by("created_at", "id")
        if after is not None:
            created_at, job_id = after
            page_query = page_query.filter(
                Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=job_id)
            )
        rows = list(page_query.values_list("id", "kind", "priority", "created_at")[:SWEEP_PAGE])
        if not rows:
            return
        after = (rows[-1][3], str(rows[-1][0]))
        seen += len(rows)
        yield [(str(pk), kind, priority) for pk, kind, priority, _ in rows]


def _resend_lost_messages(now: datetime) -> int:
    """An overdue job is usually just queued behind a backlog: resend only the ones whose
    message the broker does not hold, so a long backlog is not doubled every sweep."""
    overdue_jobs = _overdue(now)
    if not overdue_jobs.exists():
        return 0
    since = (now - timedelta(seconds=settings.JOB_ENQUEUE_OVERDUE_SECONDS)).timestamp()
    held = _held_job_ids(since=since)
    missing: list[tuple[str, str, int]] = []
    # Every overdue job is looked at (a backlog of held messages may be long); at most
    # SWEEP_RUN_LIMIT of the missing ones are resent this run, the oldest.
    for page in _oldest_first(overdue_jobs):
        missing += [row for row in page if held is None or row[0] not in held]
        if len(missing) >= SWEEP_RUN_LIMIT:
            missing = missing[:SWEEP_RUN_LIMIT]
            break
    if not missing:
        return 0
    if held is not None:
        # Look twice: a message a worker has just popped is in neither the queue nor the
        # unacknowledged set for a moment, and a job may have run to its end since.
        time.sleep(SWEEP_RECHECK_SECONDS)
        taken = _taken_job_ids(since=since)
        missing = [row for row in missing if row[0] not in taken]
    resent = 0
    for job_id, kind, priority in missing:
        # Conditional on still being overdue: a job claimed, cancelled or resent meanwhile
        # is left alone.
        if not _overdue(now).filter(pk=job_id).update(enqueued_at=timezone.now()):
            continue
        if job_send_message(job_id=job_id, kind=kind, priority=priority):
            resent += 1
    return resent


def _queues() -> list[str]:
    return sorted({route["queue"] for route in settings.CELERY_TASK_ROUTES.values()})


def _held_job_ids(*, since: float) -> set[str] | None:
    """The jobs whose message the broker holds (see jobs.broker.held_job_ids); None when the
    broker cannot be read: then every overdue job counts as missing (a needless resend
    costs one no-op delivery, a lost message a lost job)."""
    try:
        return broker.held_job_ids(_queues(), since=since)
    except Exception:
        logger.warning("sweeper: could not read the broker's queues", exc_info=True)
        return None


def _taken_job_ids(*, since: float) -> set[str]:
    try:
        return broker.taken_job_ids(since=since)
    except Exception:
        logger.warning("sweeper: could not read the broker's unacked messages", exc_info=True)
        return set()


def _recover_stalled(now: datetime) -> tuple[int, int]:
    """Active jobs silent for twice the lease: re-queued (a stall), or failed once they
    stalled JOB_MAX_STALLED_COUNT times. Oldest heartbeat first."""
    stale = now - timedelta(seconds=settings.JOB_LEASE_SECONDS * 2)
    silent = Job.objects.filter(status=JobStatus.ACTIVE, heartbeat_at__lt=stale)
    stalled = failed = 0
    for page in _oldest_first(silent, limit=SWEEP_RUN_LIMIT):
        for job_id, _, _ in page:
            with transaction.atomic():
                job = (
                    Job.objects.select_for_update(of=("self",))
                    .select_related("owner")
                    .filter(pk=job_id, status=JobStatus.ACTIVE, heartbeat_at__lt=stale)
                    .first()
                )
                if job is None:
                    continue
                if job.stalled_count >= settings.JOB_MAX_STALLED_COUNT:
                    job_fail_stalled(job)
                    failed += 1
                    continue
                job_transition(
                    job,
                    JobStatus.WAITING,
                    stalled_count=job.stalled_count + 1,
                    heartbeat_at=None,
                    enqueued_at=timezone.now(),
                )
                job_enqueue_on_commit(job)
                stalled += 1
    return stalled, failed
