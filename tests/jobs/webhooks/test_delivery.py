"""Deliveries in-process against a real receiver on loopback: what is sent, signed and
recorded; retries, 410, the guard at delivery time, a broker outage, redelivery."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import GeneratedImage, Job, JobStatus
from jobs.webhooks import services as webhooks
from jobs.webhooks import ssrf
from jobs.webhooks.models import (
    CallbackSecret,
    DeliveryStatus,
    JobCallback,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.conftest import free_port
from tests.factories import JobFactory
from tests.jobs.faults import celery_app_on
from tests.jobs.webhooks.conftest import RETRY_SCHEDULE, attempt_now
from tests.jobs.webhooks.receiver import HANG, running_receiver

pytestmark = pytest.mark.django_db


def callback_secret(user: Any) -> Callable[[], str]:
    # Read here: the receiver's thread has a database connection of its own, which cannot
    # see this test's uncommitted rows.
    secret = webhooks.callback_secret_get(user=user).secret
    return lambda: secret


def test_a_completed_job_posts_its_final_json_signed_once_accepted(
    alice: Any, alice_client: APIClient, end_job: Callable[..., Job]
) -> None:
    with running_receiver([200], secret=callback_secret(alice)) as receiver:
        job = JobFactory(owner=alice, platforms=["twitter-post", "instagram-post"])
        JobCallback.objects.create(job=job, url=receiver.url)
        job = end_job(job, "complete")
        assert job.status == JobStatus.COMPLETED
        delivery = attempt_now(WebhookDelivery.objects.get(job=job))

    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED, 1, 200,
    )  # fmt: skip
    assert delivery.succeeded_at is not None and delivery.next_attempt_at is None
    [request] = receiver.requests
    assert request.verified
    assert request.headers["webhook-id"] == delivery.webhook_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("SnapAsset-Webhooks/")
    event = json.loads(request.body)
    assert event["type"] == "job.completed"
    assert event["timestamp"] == job.finished_at.isoformat()
    # data is what GET /api/jobs/{jobId} answers, plus the result.
    result = event["data"].pop("result")
    assert event["data"] == alice_client.get(f"/api/jobs/{job.pk}").json()
    assert result["totalImages"] == 2 and result["success"] is True
    assert [image["platformId"] for image in result["images"]] == ["twitter-post", "instagram-post"]
    stored = GeneratedImage.objects.get(job=job, platform_id="twitter-post")
    assert result["images"][0]["storagePath"] == stored.storage_path


@pytest.mark.parametrize(
    ("how", "event_type"), [("fail", "job.failed"), ("cancel", "job.cancelled")]
)
def test_failed_and_cancelled_jobs_are_events_too(
    alice: Any, end_job: Callable[..., Job], how: str, event_type: str
) -> None:
    job = JobFactory(owner=alice)
    JobCallback.objects.create(job=job, url="http://127.0.0.1:9/hook")
    end_job(job, how)
    delivery = WebhookDelivery.objects.get(job=job)
    event = json.loads(delivery.payload)
    assert (delivery.event_type, event["type"]) == (event_type, event_type)
    assert event["data"]["jobId"] == str(job.pk) and "result" not in event["data"]
    assert event["data"]["status"] == how.replace("fail", "failed").replace("cancel", "cancelled")


def test_a_failed_attempt_is_retried_with_the_same_id_and_body_until_accepted(
    alice: Any, end_job: Callable[..., Job]
) -> None:
    with running_receiver([500, 200], secret=callback_secret(alice)) as receiver:
        job = JobFactory(owner=alice)
        JobCallback.objects.create(job=job, url=receiver.url)
        end_job(job)
        delivery = WebhookDelivery.objects.get(job=job)
        before = timezone.now()
        delivery = attempt_now(delivery)
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            DeliveryStatus.PENDING, 1, 500,
        )  # fmt: skip
        assert delivery.last_error == 'HTTP 500 Internal Server Error: {"ok": false}'
        delay = (delivery.next_attempt_at - before).total_seconds()
        assert RETRY_SCHEDULE[0] <= delay <= RETRY_SCHEDULE[0] * 1.1 + 1
        assert delivery.enqueued_at is not None  # its countdown message is on its way

        delivery = attempt_now(delivery)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED, 2, 200,
    )  # fmt: skip
    first, second = receiver.requests
    assert first.verified and second.verified
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.webhook_id
    assert first.body == second.body


def test_a_delivery_fails_when_its_schedule_is_used_up(
    alice: Any, end_job: Callable[..., Job]
) -> None:
    with running_receiver([503], secret=callback_secret(alice)) as receiver:
        job = JobFactory(owner=alice)
        JobCallback.objects.create(job=job, url=receiver.url)
        end_job(job)
        delivery = WebhookDelivery.objects.get(job=job)
        for _ in range(len(RETRY_SCHEDULE) + 1):
            delivery = attempt_now(delivery)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    assert delivery.next_attempt_at is None
    assert len(receiver.requests) == 3


def test_a_timeout_is_a_failed_attempt(
    alice: Any, end_job: Callable[..., Job], settings: Any
) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    with running_receiver([HANG], secret=callback_secret(alice)) as receiver:
        receiver.hang_seconds = 3
        job = JobFactory(owner=alice)
        JobCallback.objects.create(job=job, url=receiver.url)
        end_job(job)
        started = time.monotonic()
        delivery = attempt_now(WebhookDelivery.objects.get(job=job))
        assert time.monotonic() - started < 2.5
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.PENDING, 1, None,
    )  # fmt: skip
    assert delivery.last_error.startswith("Timed out after 1 s")


def test_redirects_are_not_followed(alice: Any, end_job: Callable[..., Job]) -> None:
    with running_receiver([302], secret=callback_secret(alice)) as receiver:
        job = JobFactory(owner=alice)
        JobCallback.objects.create(job=job, url=receiver.url)
        end_job(job)
        delivery = attempt_now(WebhookDelivery.objects.get(job=job))
    assert delivery.last_status_code == 302 and delivery.status == DeliveryStatus.PENDING
    assert "redirects are not followed" in delivery.last_error
    assert len(receiver.requests) == 1


def test_a_410_disables_the_endpoint_and_it_gets_no_more_events(
    alice: Any, end_job: Callable[..., Job]
) -> None:
    endpoint = WebhookEndpoint.objects.create(owner=alice, url="http://127.0.0.1:9/x")
    secret = endpoint.secret
    with running_receiver([410], secret=lambda: secret) as receiver:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=receiver.url)
        endpoint.refresh_from_db()
        job = end_job(JobFactory(owner=alice))
        delivery = attempt_now(WebhookDelivery.objects.get(job=job))
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.FAILED, 1, 410,
    )  # fmt: skip
    assert delivery.endpoint == endpoint and receiver.requests[0].verified
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert endpoint.disabled_reason.startswith("Answered 410 Gone on ")
    later = end_job(JobFactory(owner=alice))
    assert not WebhookDelivery.objects.filter(job=later).exists()


def test_a_410_on_a_callback_url_stops_that_delivery(
    alice: Any, end_job: Callable[..., Job]
) -> None:
    with running_receiver([410], secret=callback_secret(alice)) as receiver:
        job = JobFactory(owner=alice)
        JobCallback.objects.create(job=job, url=receiver.url)
        end_job(job)
        delivery = attempt_now(WebhookDelivery.objects.get(job=job))
    assert (delivery.status, delivery.next_attempt_at) == (DeliveryStatus.FAILED, None)


def test_endpoints_get_the_events_they_chose_and_a_shared_url_gets_one_delivery(
    alice: Any, bob: Any, end_job: Callable[..., Job]
) -> None:
    every = WebhookEndpoint.objects.create(owner=alice, url="http://127.0.0.1:9/every")
    WebhookEndpoint.objects.create(
        owner=alice, url="http://127.0.0.1:9/failures", event_types=["job.failed"]
    )
    WebhookEndpoint.objects.create(owner=alice, url="http://127.0.0.1:9/off", enabled=False)
    WebhookEndpoint.objects.create(owner=bob, url="http://127.0.0.1:9/bobs")
    job = JobFactory(owner=alice)
    JobCallback.objects.create(job=job, url=every.url)  # the same URL as an endpoint
    end_job(job, "cancel")
    [delivery] = WebhookDelivery.objects.filter(job=job)
    assert (delivery.url, delivery.endpoint) == (every.url, every)

    failed = end_job(JobFactory(owner=alice), "fail")
    urls = set(WebhookDelivery.objects.filter(job=failed).values_list("url", flat=True))
    assert urls == {every.url, "http://127.0.0.1:9/failures"}
    assert len(set(WebhookDelivery.objects.filter(job=failed).values_list("webhook_id"))) == 1


def test_a_retried_job_that_ends_again_is_a_new_event(
    alice: Any, end_job: Callable[..., Job], django_capture_on_commit_callbacks: Any
) -> None:
    from jobs.services.control import job_retry

    job = JobFactory(owner=alice)
    JobCallback.objects.create(job=job, url="http://127.0.0.1:9/hook")
    end_job(job, "cancel")
    with django_capture_on_commit_callbacks(execute=True):
        job_retry(job=job)
    end_job(job, "cancel")
    first, second = WebhookDelivery.objects.filter(job=job).order_by("created_at")
    assert first.webhook_id != second.webhook_id


def test_the_guard_runs_again_before_each_attempt_against_dns_rebinding(
    alice: Any, alice_client: APIClient, end_job: Callable[..., Job], monkeypatch: Any,
    settings: Any,
) -> None:  # fmt: skip
    """The name resolved to a public address at submission and to loopback at delivery:
    nothing is sent, and the delivery fails for good."""
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = []  # loopback is forbidden here, as in production
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    monkeypatch.setattr(ssrf, "system_resolver", lambda host, port: next(answers))
    with running_receiver([200], secret=callback_secret(alice)) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        response = alice_client.post(
            "/api/jobs/generate",
            {"prompt": "A fox", "callbackUrl": f"http://rebind.example.com:{port}/hook"},
            format="json",
        )
        assert response.status_code == 202
        job = end_job(Job.objects.get(pk=response.json()["jobId"]), "cancel")
        delivery = attempt_now(WebhookDelivery.objects.get(job=job))
    assert receiver.requests == []
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)
    assert delivery.last_error.startswith(
        "Refused by the SSRF guard: rebind.example.com resolves to 127.0.0.1, which is a "
        "loopback address"
    )


def test_a_rotated_secret_and_the_previous_one_both_sign_for_a_day(
    alice: Any, end_job: Callable[..., Job]
) -> None:
    old = webhooks.callback_secret_get(user=alice).secret
    webhooks.secret_rotate(CallbackSecret.objects.get(owner=alice))
    with running_receiver([200, 200], secret=lambda: old) as receiver:
        job = JobFactory(owner=alice)
        JobCallback.objects.create(job=job, url=receiver.url)
        end_job(job)
        attempt_now(WebhookDelivery.objects.get(job=job))
        CallbackSecret.objects.filter(owner=alice).update(
            previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
        )
        webhooks.delivery_redeliver(delivery=WebhookDelivery.objects.get(job=job))
        attempt_now(WebhookDelivery.objects.get(job=job))
    assert [r.verified for r in receiver.requests] == [True, False]
    assert len(receiver.requests[0].headers["webhook-signature"].split(" ")) == 2


def test_the_job_ends_at_once_while_the_broker_is_down_and_the_dispatcher_sends_later(
    alice: Any, end_job: Callable[..., Job]
) -> None:
    job = JobFactory(owner=alice)
    JobCallback.objects.create(job=job, url="http://127.0.0.1:9/a")
    WebhookEndpoint.objects.create(owner=alice, url="http://127.0.0.1:9/b")
    with celery_app_on(f"redis://127.0.0.1:{free_port()}/0"):
        started = time.monotonic()
        job = end_job(job, "cancel")
        took = time.monotonic() - started
    assert job.status == JobStatus.CANCELLED
    assert took < 5, took
    deliveries = WebhookDelivery.objects.filter(job=job)
    assert [(d.status, d.enqueued_at) for d in deliveries] == [(DeliveryStatus.PENDING, None)] * 2
    assert webhooks.deliveries_dispatch_due() == {"sent": 2}
    assert all(d.enqueued_at is not None for d in WebhookDelivery.objects.filter(job=job))
    # Sent, and not due again for another minute: the next run leaves them alone.
    assert webhooks.deliveries_dispatch_due() == {"sent": 0}


def test_the_dispatcher_resends_a_due_delivery_whose_message_was_lost(
    alice: Any, end_job: Callable[..., Job]
) -> None:
    job = JobFactory(owner=alice)
    JobCallback.objects.create(job=job, url="http://127.0.0.1:9/a")
    end_job(job)
    delivery = WebhookDelivery.objects.get(job=job)
    assert webhooks.deliveries_dispatch_due() == {"sent": 0}  # its message is on its way
    long_ago = timezone.now() - timedelta(minutes=5)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=long_ago, enqueued_at=long_ago
    )
    assert webhooks.deliveries_dispatch_due() == {"sent": 1}
    # An attempt in flight (held) is not sent again; a finished delivery never is.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        enqueued_at=long_ago, locked_until=timezone.now() + timedelta(minutes=1)
    )
    assert webhooks.deliveries_dispatch_due() == {"sent": 0}
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        locked_until=None, status=DeliveryStatus.SUCCEEDED
    )
    assert webhooks.deliveries_dispatch_due() == {"sent": 0}


def test_a_duplicate_or_early_message_does_not_send_twice(
    alice: Any, end_job: Callable[..., Job]
) -> None:
    with running_receiver([500], secret=callback_secret(alice)) as receiver:
        job = JobFactory(owner=alice)
        JobCallback.objects.create(job=job, url=receiver.url)
        end_job(job)
        delivery = attempt_now(WebhookDelivery.objects.get(job=job))
        # The retry is due in a second: a stale duplicate now does nothing.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=timezone.now() + timedelta(seconds=60)
        )
        webhooks.delivery_attempt(delivery_id=str(delivery.pk))
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and len(receiver.requests) == 1


def test_staff_redeliver_from_the_admin(
    alice: Any, staff: Any, end_job: Callable[..., Job]
) -> None:
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_webhookdelivery", "change_webhookdelivery"])
    )
    admin = Client()
    admin.force_login(staff)
    with running_receiver([200, 200], secret=callback_secret(alice)) as receiver:
        job = JobFactory(owner=alice)
        JobCallback.objects.create(job=job, url=receiver.url)
        end_job(job)
        delivery = attempt_now(WebhookDelivery.objects.get(job=job))
        assert delivery.status == DeliveryStatus.SUCCEEDED
        page = admin.get("/admin/webhooks/webhookdelivery/")
        assert page.status_code == 200 and delivery.webhook_id in page.content.decode()
        response = admin.post(
            "/admin/webhooks/webhookdelivery/",
            {"action": "redeliver", "_selected_action": [str(delivery.pk)]},
            follow=True,
        )
        assert "Redelivering 1 deliveries." in response.content.decode()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)
        delivery = attempt_now(delivery)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


def test_endpoints_in_the_admin_are_checked_and_their_secret_shown_to_their_owner(
    staff: Any,
) -> None:
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="webhooks"))
    admin = Client()
    admin.force_login(staff)
    refused = admin.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"url": "https://10.1.2.3/hook", "description": "", "enabled": "on"},
    )
    assert refused.status_code == 200
    assert "10.1.2.3 is a private address" in refused.content.decode()
    added = admin.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"url": "http://127.0.0.1:8080/hook", "enabled": "on", "event_types": ["job.failed"]},
    )
    assert added.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.owner, endpoint.event_types) == (staff, ["job.failed"])
    page = admin.get(f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/").content.decode()
    assert endpoint.secret in page
    old = endpoint.secret
    admin.post(
        "/admin/webhooks/webhookendpoint/",
        {"action": "rotate_secret", "_selected_action": [str(endpoint.pk)]},
    )
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.previous_secret == old


def test_beat_runs_the_dispatcher_and_webhook_tasks_have_a_queue_of_their_own() -> None:
    from snapasset.celery import app

    entry = app.conf.beat_schedule["webhooks-dispatch"]
    assert (entry["task"], entry["schedule"]) == ("webhooks.dispatch_due", 30.0)
    app.loader.import_default_modules()
    for name in ("webhooks.deliver", "webhooks.dispatch_due"):
        assert name in app.tasks
        assert app.amqp.router.route({}, name)["queue"].name == "webhooks"
