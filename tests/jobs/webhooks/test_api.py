"""The webhook API: callbackUrl on submission, a job's deliveries (owner or staff), the
callback secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.webhooks.models import JobCallback, WebhookDelivery
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hook"


def submit(client: APIClient, **body: Any) -> Any:
    return client.post("/api/jobs/generate", {"prompt": "A fox", **body}, format="json")


def test_a_submission_with_a_callback_url_stores_it(alice: Any, alice_client: APIClient) -> None:
    response = submit(alice_client, callbackUrl=HOOK)
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["jobId"])
    assert JobCallback.objects.get(job=job).url == HOOK


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://127.0.0.1/hook", "Only https:// (or http://) URLs are accepted."),
        ("not a url", "Only https:// (or http://) URLs are accepted."),
        ("https://10.0.0.8/hook", "10.0.0.8 is a private address"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("https://[::ffff:10.0.0.8]/hook", "private (IPv4 10.0.0.8 inside IPv6)"),
        ("http://93.184.216.34/hook", "Only https:// URLs are accepted."),
        ("https://user:secret@127.0.0.1/hook", "Credentials in the URL are not accepted"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_a_callback_url_the_guard_refuses_is_a_400_naming_the_field(
    alice_client: APIClient, url: str, says: str
) -> None:
    response = submit(alice_client, callbackUrl=url)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Invalid callbackUrl"
    assert says in body["details"]["callbackUrl"][0]
    assert not Job.objects.exists()


def test_loopback_is_refused_unless_allowed(alice_client: APIClient, settings: Any) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = []
    response = submit(alice_client, callbackUrl=HOOK)
    assert response.status_code == 400
    assert "127.0.0.1 is a loopback address" in response.json()["details"]["callbackUrl"][0]


@pytest.mark.parametrize("value", [123, ["http://127.0.0.1/"], {"url": HOOK}, "x" * 2049])
def test_a_callback_url_of_the_wrong_type_or_length_is_a_400(
    alice_client: APIClient, value: Any
) -> None:
    response = submit(alice_client, callbackUrl=value)
    assert response.status_code == 400
    assert "callbackUrl" in response.json()["details"]


def test_a_job_s_deliveries_are_seen_by_its_owner_and_staff_only(
    alice: Any,
    alice_client: APIClient,
    bob_client: APIClient,
    staff_client: APIClient,
    anon_client: APIClient,
    end_job: Callable[..., Job],
) -> None:
    job = JobFactory(owner=alice)
    JobCallback.objects.create(job=job, url=HOOK)
    end_job(job, "cancel")
    delivery = WebhookDelivery.objects.get(job=job)

    body = alice_client.get(f"/api/jobs/{job.pk}/deliveries").json()
    assert body["jobId"] == str(job.pk)
    [shown] = body["deliveries"]
    assert shown == {
        "id": str(delivery.pk),
        "webhookId": delivery.webhook_id,
        "url": HOOK,
        "endpointId": None,
        "eventType": "job.cancelled",
        "status": "pending",
        "attempts": 0,
        "lastStatusCode": None,
        "lastError": "",
        "nextAttemptAt": delivery.next_attempt_at.isoformat(),
        "succeededAt": None,
        "createdAt": delivery.created_at.isoformat(),
        "updatedAt": delivery.updated_at.isoformat(),
    }
    assert staff_client.get(f"/api/jobs/{job.pk}/deliveries").json() == body
    missing = bob_client.get(f"/api/jobs/{job.pk}/deliveries")
    assert missing.status_code == 404 and missing.json() == {"error": "Job not found"}
    assert bob_client.get("/api/jobs/not-a-uuid/deliveries").status_code == 404
    assert anon_client.get(f"/api/jobs/{job.pk}/deliveries").status_code == 401


def test_a_job_without_webhooks_has_no_deliveries(alice: Any, alice_client: APIClient) -> None:
    job = JobFactory(owner=alice)
    assert alice_client.get(f"/api/jobs/{job.pk}/deliveries").json() == {
        "jobId": str(job.pk),
        "deliveries": [],
    }


def test_each_user_reads_and_rotates_their_own_callback_secret(
    alice_client: APIClient, bob_client: APIClient
) -> None:
    first = alice_client.get("/api/webhooks/secret")
    assert first.status_code == 200
    assert "no-store" in first["Cache-Control"]
    secret = first.json()["secret"]
    assert secret.startswith("whsec_")
    assert first.json()["previousSecretExpiresAt"] is None
    assert alice_client.get("/api/webhooks/secret").json()["secret"] == secret
    assert bob_client.get("/api/webhooks/secret").json()["secret"] != secret

    rotated = alice_client.post("/api/webhooks/secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] not in (secret, "")
    assert rotated.json()["previousSecretExpiresAt"] is not None
    assert alice_client.get("/api/webhooks/secret").json() == rotated.json()
