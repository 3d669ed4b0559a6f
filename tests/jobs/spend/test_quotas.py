"""Daily quotas of paid generations: what counts, who is held to what, the 429 a submission
over quota gets, GET /api/usage, and the overrides in the admin."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIRequestFactory

from jobs.spend.ledger import CallSpec, ledger_call_started, ledger_record_call
from jobs.spend.models import UserQuota
from jobs.spend.quotas import generations_for_retry, quota_check, quota_day, quota_status
from snapasset.core.exception_handler import api_exception_handler
from snapasset.core.exceptions import QuotaExceededError
from tests.conftest import client_for
from tests.factories import JobFactory

SPEC = CallSpec(provider="openai", model="gpt-image-2.6-sunburst", quality="medium")


def paid(user: Any, outcome: str = "succeeded", *, at: datetime | None = None) -> None:
    job = JobFactory(owner=user, status="completed", source_path="tmp/x/original.png")
    ledger_record_call(job=job, call_number=1, outcome=outcome, spec=SPEC, at=at)


def test_without_a_quota_everyone_is_unlimited(alice: Any) -> None:
    for _ in range(3):
        paid(alice)
    quota_check(alice, generations=1000)
    status = quota_status(alice)
    assert (status.limit, status.source, status.used_today, status.remaining) == (
        None, "unlimited", 3, None,
    )  # fmt: skip


def test_paid_calls_of_today_and_jobs_that_will_pay_count(alice: Any, settings: Any) -> None:
    settings.DAILY_GENERATION_QUOTA = 4
    paid(alice, "succeeded")
    paid(alice, "cut_short")  # may have been billed
    paid(alice, "failed")  # an error answer: not billed
    paid(alice, "reused")  # no call
    paid(alice, "succeeded", at=timezone.now() - timedelta(days=1))  # yesterday
    JobFactory(owner=alice, status="waiting")  # will pay
    JobFactory(owner=alice, status="delayed")  # will pay
    JobFactory(owner=alice, status="active", source_path="tmp/a/original.png")  # paid already
    JobFactory(owner=alice, status="failed")  # not pending

    status = quota_status(alice)
    assert (status.used_today, status.pending, status.remaining) == (2, 2, 0)
    with pytest.raises(QuotaExceededError) as refused:
        quota_check(alice, generations=1)
    error = refused.value
    assert (error.limit, error.used, error.pending, error.requested) == (4, 2, 2, 1)
    assert error.resets_at == quota_day()[1]
    assert 0 < error.retry_after <= 86400
    quota_check(alice, generations=0)  # a reuse or a retry that keeps its original: free


def test_a_call_in_flight_counts_once(alice: Any, settings: Any) -> None:
    settings.DAILY_GENERATION_QUOTA = 2
    job = JobFactory(owner=alice, status="active")
    ledger_call_started(job=job, call_number=1, spec=SPEC)
    status = quota_status(alice)
    assert (status.used_today, status.pending) == (1, 0)
    quota_check(alice, generations=1)


def test_a_job_cut_short_today_and_queued_again_counts_twice(alice: Any, settings: Any) -> None:
    settings.DAILY_GENERATION_QUOTA = 10
    job = JobFactory(owner=alice, status="delayed")
    ledger_record_call(job=job, call_number=1, outcome="cut_short", spec=SPEC)
    status = quota_status(alice)
    assert (status.used_today, status.pending) == (1, 1)


def test_a_retry_pays_again_only_without_its_original(alice: Any) -> None:
    assert generations_for_retry(JobFactory(owner=alice, status="failed")) == 1
    kept = JobFactory(owner=alice, status="failed", source_path="tmp/a/original.png")
    assert generations_for_retry(kept) == 0


def test_a_users_own_quota_replaces_the_default(alice: Any, bob: Any, settings: Any) -> None:
    settings.DAILY_GENERATION_QUOTA = 1
    UserQuota.objects.create(user=alice, daily_generations=3)
    UserQuota.objects.create(user=bob, daily_generations=None)  # unlimited
    for _ in range(2):
        paid(alice)
        paid(bob)
    quota_check(alice, generations=1)
    with pytest.raises(QuotaExceededError):
        quota_check(alice, generations=2)
    quota_check(bob, generations=100)
    assert quota_status(alice).source == "override" and quota_status(bob).limit is None


def test_a_quota_of_zero_refuses_every_paid_generation(alice: Any) -> None:
    UserQuota.objects.create(user=alice, daily_generations=0)
    with pytest.raises(QuotaExceededError):
        quota_check(alice, generations=1)


def test_staff_are_exempt_unless_they_have_their_own_quota(staff: Any, settings: Any) -> None:
    settings.DAILY_GENERATION_QUOTA = 1
    paid(staff)
    quota_check(staff, generations=5)
    assert quota_status(staff).source == "staff"
    UserQuota.objects.create(user=staff, daily_generations=1)
    with pytest.raises(QuotaExceededError):
        quota_check(staff, generations=1)


def test_an_override_holds_from_the_next_request_of_an_api_key(alice: Any, settings: Any) -> None:
    """The override comes with the key's user, in the key's query: never a stale copy."""
    settings.SUBMIT_RATE = None
    client = client_for(alice)

    def submit() -> int:
        return int(
            client.post("/api/jobs/generate", {"prompt": "A fox"}, format="json").status_code
        )

    assert submit() == 202
    quota = UserQuota.objects.create(user=alice, daily_generations=1)
    assert submit() == 429  # the first job is queued: it will pay
    quota.daily_generations = None  # unlimited
    quota.save()
    assert submit() == 202
    quota.delete()
    settings.DAILY_GENERATION_QUOTA = 2
    assert submit() == 429


def test_the_day_ends_at_midnight_in_the_time_zone(settings: Any) -> None:
    settings.TIME_ZONE = "America/New_York"
    now = datetime.fromisoformat("2026-03-08T12:00:00+00:00")  # the day clocks go forward
    start, end = quota_day(now)
    assert start.isoformat() == "2026-03-08T00:00:00-05:00"
    assert end.isoformat() == "2026-03-09T00:00:00-04:00"
    assert end.timestamp() - start.timestamp() == 23 * 3600


def test_over_quota_answers_429_with_the_limit_the_usage_the_reset_and_retry_after(
    alice: Any, settings: Any
) -> None:
    settings.DAILY_GENERATION_QUOTA = 1
    paid(alice)
    with pytest.raises(QuotaExceededError) as refused:
        quota_check(alice, generations=1)
    request = APIRequestFactory().post("/api/jobs/generate")
    response = api_exception_handler(refused.value, {"request": request})
    assert response is not None and response.status_code == 429
    body = response.data
    assert body["limit"] == 1 and body["used"] == 1 and body["pending"] == 0
    assert body["requested"] == 1 and "Daily quota" in body["error"]
    assert body["resetsAt"] == quota_day()[1].isoformat()
    assert response["Retry-After"] == str(body["retryAfter"])
    assert int(response["Retry-After"]) == pytest.approx(
        (quota_day()[1] - timezone.now()).total_seconds(), abs=5
    )


# --- GET /api/usage ---------------------------------------------------------------------------


def test_usage_tells_a_user_their_generations_limits_and_reset(
    alice_client: Any, alice: Any, bob: Any, settings: Any
) -> None:
    settings.DAILY_GENERATION_QUOTA = 5
    paid(alice)
    paid(alice, "reused")
    paid(bob)
    JobFactory(owner=alice, status="waiting")
    response = alice_client.get("/api/usage")
    assert response.status_code == 200
    body = response.json()
    assert body["generations"] == {
        "usedToday": 1,
        "pending": 1,
        "reusedToday": 1,
        "dailyLimit": 5,
        "remaining": 3,
        "limitSource": "default",
        "resetsAt": body["generations"]["resetsAt"],
    }
    assert datetime.fromisoformat(body["generations"]["resetsAt"]) == quota_day()[1]
    assert body["jobs"] == {"pending": 1, "pendingLimit": settings.JOB_MAX_PENDING_PER_USER}
    assert body["submitRate"] == settings.SUBMIT_RATE
    assert abs(body["timestamp"] / 1000 - timezone.now().timestamp()) < 60


def test_usage_of_an_unlimited_user_and_without_credentials(
    staff_client: Any, anon_client: Any, settings: Any
) -> None:
    settings.SUBMIT_RATE = None
    body = staff_client.get("/api/usage").json()
    assert body["generations"]["dailyLimit"] is None
    assert body["generations"]["remaining"] is None
    assert body["generations"]["limitSource"] == "staff"
    assert body["submitRate"] is None
    assert anon_client.get("/api/usage").status_code in (401, 403)


# --- The admin ----------------------------------------------------------------------------------


def test_an_admin_sets_a_users_quota(client: Any, django_user_model: Any, alice: Any) -> None:
    root = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(root)
    response = client.post(
        "/admin/spend/userquota/add/",
        {"user": alice.pk, "daily_generations": "2", "note": "trial account"},
    )
    assert response.status_code == 302, response.content[:2000]
    assert quota_status(alice).limit == 2
    page = client.get("/admin/spend/userquota/")
    assert page.status_code == 200 and b"alice" in page.content
