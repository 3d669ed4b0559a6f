"""Reads of the Supabase sync: the backlog, for /metrics."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Min
from django.utils import timezone

from jobs.supabase_sync.models import SyncEvent, SyncState


def sync_backlog(*, now: datetime | None = None) -> dict[str, float]:
    """Events not in Supabase: ``pending`` (still being retried) and ``failed`` (retries used
    up) counts, and ``oldest_pending_seconds`` (0 when none is pending)."""
    now = now or timezone.now()
    counts = dict(
        SyncEvent.objects.filter(state__in=(SyncState.PENDING, SyncState.FAILED))
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    oldest = SyncEvent.objects.filter(state=SyncState.PENDING).aggregate(at=Min("created_at"))["at"]
    return {
        "pending": float(counts.get(SyncState.PENDING, 0)),
        "failed": float(counts.get(SyncState.FAILED, 0)),
        "oldest_pending_seconds": max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
    }
