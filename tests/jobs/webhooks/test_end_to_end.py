"""Webhooks through the real processes: HTTP to uvicorn, a Celery worker process, celery beat,
and receivers on loopback that verify every signature with the secret their owner reads
from the API or the endpoint."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from jobs.webhooks.models import DeliveryStatus, JobCallback, WebhookDelivery, WebhookEndpoint
from tests.conftest import ManagedProcess, api_key_for, child_env, free_port, make_user, wait_until
from tests.factories import JobFactory
from tests.jobs.faults import celery_app_on
from tests.jobs.webhooks.receiver import HANG, running_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# As the brief of the tests says: loopback allowed, short retry delays and timeouts.
ENV = {
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "WEBHOOK_RETRY_SCHEDULE": "1,1,1",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
    "WEBHOOK_DISPATCH_INTERVAL_SECONDS": "1",
}


def deliveries(base: str, headers: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/jobs/{job_id}/deliveries", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


def test_a_job_s_webhooks_are_retried_by_the_worker_until_the_receivers_take_them(
    start_worker: Any, start_web: Any
) -> None:
    alice = make_user("alice")
    headers = {"Authorization": f"Bearer {api_key_for(alice)}"}
    base = start_web(env=ENV)
    start_worker(queues="images,webhooks", env=ENV)
    callback_secret = httpx.get(f"{base}/api/webhooks/secret", headers=headers).json()["secret"]
    endpoint = WebhookEndpoint.objects.create(owner=alice, url="http://127.0.0.1:9/later")
    endpoint_secret = endpoint.secret

    with (
        running_receiver([500, 200], secret=lambda: callback_secret) as callback,
        running_receiver([HANG, 200], secret=lambda: endpoint_secret) as registered,
    ):
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=registered.url)
        response = httpx.post(
            f"{base}/api/jobs/generate",
            json={
                "prompt": "A red fox",
                "platforms": ["twitter-post"],
                "callbackUrl": callback.url,
            },
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["jobId"]
        done = wait_until(
            lambda: (shown := deliveries(base, headers, job_id))
            and all(d["status"] != "pending" for d in shown)
            and len(shown) == 2
            and shown,
            timeout=90, interval=0.5, what="both deliveries to end",
        )  # fmt: skip

    by_url = {d["url"]: d for d in done}
    for receiver, first_answer in ((callback, 500), (registered, HANG)):
        delivery = by_url[receiver.url]
        assert (delivery["status"], delivery["attempts"], delivery["lastStatusCode"]) == (
            "succeeded", 2, 200,
        )  # fmt: skip
        assert len(receiver.requests) == 2 and all(r.verified for r in receiver.requests)
        first, second = receiver.requests
        assert (first.answered, second.answered) == (first_answer, 200)
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["webhookId"]
        assert first.body == second.body
        assert second.at - first.at >= 1  # the schedule's delay, in a countdown, not a sleep
        event = json.loads(second.body)
        assert (event["type"], event["data"]["jobId"], event["data"]["status"]) == (
            "job.completed", job_id, "completed",
        )  # fmt: skip
        assert event["data"]["result"]["images"][0]["platformId"] == "twitter-post"
    assert by_url[callback.url]["endpointId"] is None
    assert by_url[registered.url]["endpointId"] == endpoint.pk
    assert (
        callback.requests[0].headers["webhook-id"] == registered.requests[0].headers["webhook-id"]
    )

    bob = make_user("bob")
    other = httpx.get(
        f"{base}/api/jobs/{job_id}/deliveries",
        headers={"Authorization": f"Bearer {api_key_for(bob)}"},
    )
    assert other.status_code == 404


def test_beat_sends_the_deliveries_whose_message_never_left_or_was_lost(
    start_worker: Any, tmp_path: Path
) -> None:
    from jobs.services.control import job_cancel
    from jobs.webhooks import services as webhooks

    alice = make_user("alice")
    secret = webhooks.callback_secret_get(user=alice).secret
    with running_receiver([200], secret=lambda: secret) as receiver:
        outage, lost = JobFactory(owner=alice), JobFactory(owner=alice)
        for job in (outage, lost):
            JobCallback.objects.create(job=job, url=receiver.url)
        # The job ends while the broker is down: its delivery's message never leaves.
        with celery_app_on(f"redis://127.0.0.1:{free_port()}/0"):
            job_cancel(job=outage)
        # This one's message left, and the broker lost it.
        job_cancel(job=lost)
        long_ago = timezone.now() - timedelta(minutes=5)
        WebhookDelivery.objects.filter(job=lost).update(
            next_attempt_at=long_ago, enqueued_at=long_ago
        )
        _drop_queued_messages()
        assert WebhookDelivery.objects.get(job=outage).enqueued_at is None

        start_worker(queues="webhooks", env=ENV)
        beat = ManagedProcess(
            "beat",
            [sys.executable, "-m", "celery", "-A", "snapasset", "beat", "-l", "info",
             "-s", str(tmp_path / "celerybeat-schedule")],
            child_env(**ENV),
            tmp_path,
        )  # fmt: skip
        try:
            wait_until(
                lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count()
                == 2,
                timeout=60, interval=0.5, what="beat to send both deliveries",
            )  # fmt: skip
        finally:
            beat.stop()
    assert "webhooks.dispatch_due" in beat.output()
    assert len(receiver.requests) == 2 and all(r.verified for r in receiver.requests)
    assert {json.loads(r.body)["data"]["jobId"] for r in receiver.requests} == {
        str(outage.pk), str(lost.pk),
    }  # fmt: skip


def _drop_queued_messages() -> None:
    """Lose the webhooks queue's messages, as a broker that lost its data would."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("webhooks*"):
        client.delete(key)
