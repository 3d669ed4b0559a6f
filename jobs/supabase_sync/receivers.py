"""Signal receivers of the Supabase sync, connected in SupabaseSyncConfig.ready()."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from jobs.models import Job
from jobs.supabase_sync import services


def on_job_status_changing(*, job: Job, previous_status: str | None, **_: Any) -> None:
    """A job's status is changing, inside its transaction: record the outbox row (one INSERT)
    when the sync is on; it commits or rolls back with the change."""
    if settings.SUPABASE_SYNC_TABLES:
        services.event_record(job=job)
