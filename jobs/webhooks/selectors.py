"""Reads of webhooks, scoped like jobs: another user's job is a 404."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from jobs.models import Job
from jobs.selectors import job_get_for_user
from jobs.webhooks.models import WebhookDelivery


def deliveries_for_job(*, job_id: str, user: Any) -> tuple[Job, QuerySet[WebhookDelivery]]:
    """The job (owner or staff, else NotFoundError) and its deliveries, newest first."""
    job = job_get_for_user(job_id=job_id, user=user)
    return job, WebhookDelivery.objects.filter(job=job).order_by("-created_at", "url")
