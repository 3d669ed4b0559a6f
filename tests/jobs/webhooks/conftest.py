"""Fixtures of the webhook tests: loopback allowed (as WEBHOOK_ALLOWED_HOSTS=127.0.0.1 does),
short retry delays, and jobs ended through the services, their commit hooks run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from jobs.models import Job
from jobs.services.control import job_cancel
from jobs.services.generation import job_run_generation
from jobs.services.lease import job_claim
from jobs.services.outcomes import job_fail
from jobs.webhooks.models import WebhookDelivery

RETRY_SCHEDULE = [1.0, 1.0]


@pytest.fixture(autouse=True)
def webhook_settings(settings: Any) -> Any:
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_ALLOW_HTTP = False
    settings.WEBHOOK_RETRY_SCHEDULE = RETRY_SCHEDULE
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    return settings


@pytest.fixture
def end_job(django_capture_on_commit_callbacks: Any) -> Callable[..., Job]:
    """End a job as the worker or the API would (its commit hooks run: job_finished)."""

    def end(job: Job, how: str = "cancel") -> Job:
        with django_capture_on_commit_callbacks(execute=True):
            if how == "cancel":
                job_cancel(job=job)
            elif how == "fail":
                # Only a running attempt fails a job (docs/guarantees.md): claim it first.
                claim = job_claim(job_id=str(job.pk))
                assert claim is not None
                job_fail(job_id=str(job.pk), token=claim.token, reason="The model said no")
            else:
                job_run_generation(job_id=str(job.pk))
        job.refresh_from_db()
        return job

    return end


def attempt_now(delivery: WebhookDelivery) -> WebhookDelivery:
    """Run the next attempt at once, as the worker does when its countdown ends."""
    from django.utils import timezone

    from jobs.webhooks import services as webhooks

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    webhooks.delivery_attempt(delivery_id=str(delivery.pk))
    delivery.refresh_from_db()
    return delivery
