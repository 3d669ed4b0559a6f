"""Celery tasks of webhooks: thin, they take a delivery id and call a service."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from jobs.webhooks import services


# The request has its own timeouts; the time limits only bound a receiver that trickles its
# answer (the soft limit is caught and recorded as a timeout).
@shared_task(
    name=services.DELIVER_TASK,
    soft_time_limit=2 * settings.WEBHOOK_TIMEOUT_SECONDS + 5,
    time_limit=2 * settings.WEBHOOK_TIMEOUT_SECONDS + 15,
)
def deliver_webhook_task(delivery_id: str) -> None:
    services.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="webhooks.dispatch_due", ignore_result=True)
def dispatch_due_webhooks_task() -> dict[str, Any]:
    return services.deliveries_dispatch_due()
