"""Daily quotas of paid generations per user, checked before anything is queued.

The limit: the user's ``UserQuota`` row when there is one (empty: unlimited, 0: none),
otherwise DAILY_GENERATION_QUOTA (0: unlimited), except for staff, who are exempt unless a
row sets their own. A day runs from midnight to midnight in TIME_ZONE.

What counts against it, so that a day's quota is never exceeded by jobs already queued:

- the paid calls of today in the ledger: ``succeeded`` and ``cut_short`` (the model may have
  billed a call that never answered; a call in flight counts as one). ``failed`` calls (an
  error answer, not billed) and ``reused`` originals do not count;
- the owner's jobs that will still pay: waiting, delayed or active image jobs with no stored
  original (``source_path``) and no call in flight. A job cut short today counts twice, as
  it should: it was (maybe) billed once and will pay again;
- what the request asks for: 1 per new job (0 when it will reuse an original), and for a
  retry of a failed or cancelled job 1 unless its original is still kept.

``quota_check`` must run inside the submission's transaction, after the owner's row lock of
the pending-jobs cap, so that concurrent submissions of one user are counted one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from jobs.models import PENDING_STATUSES, Job, JobKind
from jobs.spend.models import PAID_OUTCOMES, ProviderCall, UserQuota
from snapasset.core.exceptions import QuotaExceededError

LimitSource = Literal["default", "override", "staff", "unlimited"]


@dataclass(frozen=True)
class QuotaStatus:
    limit: int | None  # None: unlimited
    source: LimitSource  # where the limit comes from
    used_today: int  # paid calls of today (ledger)
    pending: int  # queued or running jobs that will pay
    day_started_at: datetime
    resets_at: datetime

    @property
    def counted(self) -> int:
        return self.used_today + self.pending

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.counted)


def quota_limit(user: Any) -> tuple[int | None, LimitSource]:
    """The user's daily limit (None: unlimited) and where it comes from."""
    override = UserQuota.objects.filter(user=user).values_list("daily_generations", flat=True)
    for limit in override:
        return limit, "override"
    if user.is_staff:
        return None, "staff"
    if not settings.DAILY_GENERATION_QUOTA:
        return None, "unlimited"
    return settings.DAILY_GENERATION_QUOTA, "default"


def quota_unlimited_unless_overridden(user: Any) -> bool:
    """Whether the user is unlimited unless a UserQuota row of theirs sets a limit: staff,
    or no DAILY_GENERATION_QUOTA. Known without a query."""
    return bool(user.is_staff or not settings.DAILY_GENERATION_QUOTA)


def quota_override_sql(user_param: str = "%s") -> str:
    """SQL that is true when the user (``user_param``) has a UserQuota row that sets a limit:
    for a user of quota_unlimited_unless_overridden, whether quota_limit is not None, inside
    a statement that needs it (the submit's conditional INSERT)."""
    table = UserQuota._meta.db_table
    return (
        f'EXISTS (SELECT 1 FROM "{table}" WHERE "{table}"."user_id" = {user_param} '
        f'AND "{table}"."daily_generations" IS NOT NULL)'
    )


def quota_day(now: datetime | None = None) -> tuple[datetime, datetime]:
    """Today's start and the next midnight, in TIME_ZONE (DST-safe)."""
    local = timezone.localtime(now or timezone.now())
    start = datetime.combine(local.date(), time.min, tzinfo=local.tzinfo)
    end = datetime.combine(local.date() + timedelta(days=1), time.min, tzinfo=local.tzinfo)
    return start, end


def paid_calls_since(user: Any, since: datetime) -> int:
    return ProviderCall.objects.filter(
        user=user, created_at__gte=since, outcome__in=PAID_OUTCOMES
    ).count()


def pending_paid_jobs(user: Any) -> int:
    """The user's queued or running image jobs that will still call the model."""
    in_flight = ProviderCall.objects.filter(job=OuterRef("pk"), finished_at__isnull=True)
    return (
        Job.objects.filter(
            owner=user, kind=JobKind.IMAGE_GENERATION, status__in=PENDING_STATUSES, source_path=""
        )
        .exclude(Exists(in_flight))
        .count()
    )


def quota_status(user: Any, *, now: datetime | None = None) -> QuotaStatus:
    limit, source = quota_limit(user)
    start, end = quota_day(now)
    return QuotaStatus(
        limit=limit,
        source=source,
        used_today=paid_calls_since(user, start),
        pending=pending_paid_jobs(user),
        day_started_at=start,
        resets_at=end,
    )


def quota_check(user: Any, *, generations: int = 1, now: datetime | None = None) -> None:
    """Raise QuotaExceededError (429) when ``generations`` more paid generations would take
    ``user`` over today's quota. Unlimited users, and requests that need no paid
    generation, pass without counting anything."""
    if generations <= 0 or quota_limit(user)[0] is None:
        return
    status = quota_status(user, now=now)
    assert status.limit is not None
    if status.counted + generations <= status.limit:
        return
    retry_after = (status.resets_at - (now or timezone.now())).total_seconds()
    raise QuotaExceededError(
        f"Daily quota of paid generations reached: {status.used_today} used today and "
        f"{status.pending} queued of {status.limit}; it resets at "
        f"{status.resets_at.isoformat()}",
        limit=status.limit,
        used=status.used_today,
        pending=status.pending,
        requested=generations,
        resets_at=status.resets_at,
        retry_after=max(1.0, retry_after),
    )


def generations_for_retry(job: Job) -> int:
    """Paid generations a retry of ``job`` needs: none if its original is still kept (the
    checkpoint; the temp-files cleanup clears it) or it is not an image job, else one."""
    if job.kind != JobKind.IMAGE_GENERATION or job.source_path:
        return 0
    return 1


def quota_check_submission(owner: Any, *, reuse: bool, prompt: str, image_type: str) -> None:
    """``quota_check`` of a new job (nothing looked up for an unlimited owner)."""
    if quota_limit(owner)[0] is None:
        return
    generations = generations_for_submission(
        owner, reuse=reuse, prompt=prompt, image_type=image_type
    )
    quota_check(owner, generations=generations)


def generations_for_submission(
    owner: Any, *, reuse: bool, prompt: str, image_type: str, now: datetime | None = None
) -> int:
    """Paid generations a new job needs: none when it asks to reuse and an identical
    original of its owner is there to reuse (jobs/spend/reuse.py), else one."""
    if not reuse:
        return 1
    from jobs.providers import get_provider
    from jobs.spend.ledger import call_spec
    from jobs.spend.reuse import reuse_find_original

    spec = call_spec(get_provider())
    original = reuse_find_original(
        owner=owner, prompt=prompt, image_type=image_type, model=spec.model, size=spec.size,
        now=now,
    )  # fmt: skip
    return 0 if original is not None else 1
