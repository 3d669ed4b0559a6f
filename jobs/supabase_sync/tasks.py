"""Celery tasks of the Supabase sync (queue ``webhooks``): thin, they take an event id and call
a service."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from jobs.supabase_sync import services


# At most four requests per push, each with its own timeout; the limits only bound a server
# that trickles its answers (the soft limit is caught and recorded as a failed attempt).
@shared_task(
    name=services.PUSH_TASK,
    ignore_result=True,
    soft_time_limit=4 * settings.SUPABASE_SYNC_TIMEOUT_SECONDS + 5,
    time_limit=4 * settings.SUPABASE_SYNC_TIMEOUT_SECONDS + 15,
)
def push_sync_event_task(event_id: int) -> None:
    services.event_push(event_id=event_id)


@shared_task(name="supabase_sync.drain_due", ignore_result=True)
def drain_due_sync_events_task() -> dict[str, Any]:
    return services.events_drain_due()
