"""Reads of spend: a user's usage and limits, the staff's spend overview."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from jobs.models import PENDING_STATUSES, Job
from jobs.spend.models import CallOutcome, ProviderCall
from jobs.spend.quotas import quota_day, quota_status

OVERVIEW_DAYS = 30


def usage_for_user(user: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """GET /api/usage: the caller's paid generations today, quota, reset time, pending jobs
    and their cap, and the submit rate."""
    now = now or timezone.now()
    quota = quota_status(user, now=now)
    reused = ProviderCall.objects.filter(
        user=user, created_at__gte=quota.day_started_at, outcome=CallOutcome.REUSED
    ).count()
    pending_jobs = Job.objects.filter(owner=user, status__in=PENDING_STATUSES).count()
    return {
        "generations": {
            "usedToday": quota.used_today,
            "pending": quota.pending,
            "reusedToday": reused,
            "dailyLimit": quota.limit,
            "remaining": quota.remaining,
            "limitSource": quota.source,
            "resetsAt": quota.resets_at,
        },
        "jobs": {"pending": pending_jobs, "pendingLimit": settings.JOB_MAX_PENDING_PER_USER},
        "submitRate": settings.SUBMIT_RATE,
        "timestamp": int(now.timestamp() * 1000),
    }


def _totals(since: datetime) -> dict[str, Any]:
    row = ProviderCall.objects.filter(created_at__gte=since).aggregate(
        calls=Count("id", filter=~Q(outcome=CallOutcome.REUSED)),
        reused=Count("id", filter=Q(outcome=CallOutcome.REUSED)),
        failed=Count("id", filter=Q(outcome=CallOutcome.FAILED)),
        cost=Sum("estimated_cost_usd"),
    )
    return {
        "calls": row["calls"],
        "reused": row["reused"],
        "failed": row["failed"],
        "estimatedCostUsd": float(row["cost"] or Decimal("0")),
    }


def spend_overview(*, now: datetime | None = None) -> dict[str, Any]:
    """The staff's spend block of GET /api/jobs/stats/overview: calls to the image model
    and their estimated cost today and over the last 30 days, and today's by model."""
    start, _ = quota_day(now)
    by_model = (
        ProviderCall.objects.filter(created_at__gte=start)
        .values("model")
        .annotate(calls=Count("id"), cost=Sum("estimated_cost_usd"))
        .order_by("-cost", "model")
    )
    return {
        "currency": "USD",
        "today": _totals(start),
        "last30Days": _totals(start - timedelta(days=OVERVIEW_DAYS - 1)),
        "todayByModel": [
            {
                "model": row["model"],
                "calls": row["calls"],
                "estimatedCostUsd": float(row["cost"] or 0),
            }
            for row in by_model
        ],
    }
