"""Spend controls through the API and the pipeline: the daily quota holds submissions and
retries, `reuse` makes a job take an identical original instead of paying, a job with no
provider slot waits `delayed` (why, until when) without spending an attempt, and every
paid call lands in the ledger once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.services.generation import job_run_generation
from jobs.spend.limiter import Grant, Wait, provider_limiter
from jobs.spend.models import CallOutcome, ProviderCall
from tests.factories import JobFactory
from tests.fakes.openai_server import FakeOpenAI

ONE = ["instagram-post"]


def submit(client: Any, prompt: str = "A fox in the snow", **body: Any) -> Any:
    return client.post(
        "/api/jobs/generate", {"prompt": prompt, "platforms": ONE, **body}, format="json"
    )


def run(job_id: Any) -> Job:
    job_run_generation(job_id=str(job_id))
    return Job.objects.get(pk=job_id)


@pytest.fixture
def limited(settings: Any, use_fake_openai: FakeOpenAI) -> Iterator[Any]:
    """The in-process provider is the OpenAI fake, under a shared limit of 1 call a minute."""
    settings.OPENAI_IMAGES_PER_MINUTE = 1
    limiter = provider_limiter()
    limiter.reset()
    yield limiter
    limiter.reset()


# --- Quota -----------------------------------------------------------------------------------


def test_a_submission_over_the_daily_quota_is_refused_before_anything_is_queued(
    alice: Any, alice_client: Any, settings: Any
) -> None:
    settings.DAILY_GENERATION_QUOTA = 2
    assert submit(alice_client, "First").status_code == 202
    assert submit(alice_client, "Second").status_code == 202  # queued jobs count as pending

    refused = submit(alice_client, "Third")
    assert refused.status_code == 429
    body = refused.json()
    assert (body["limit"], body["used"], body["pending"], body["requested"]) == (2, 0, 2, 1)
    assert "Daily quota" in body["error"]
    assert datetime.fromisoformat(body["resetsAt"]) > timezone.now()
    assert refused["Retry-After"] == str(body["retryAfter"])
    assert Job.objects.filter(owner=alice).count() == 2

    usage = alice_client.get("/api/usage").json()["generations"]
    assert (usage["dailyLimit"], usage["pending"], usage["remaining"]) == (2, 2, 0)


def test_a_retry_that_would_pay_again_counts_and_one_that_keeps_its_original_does_not(
    alice: Any, alice_client: Any, settings: Any
) -> None:
    settings.DAILY_GENERATION_QUOTA = 1
    JobFactory(owner=alice, status=JobStatus.WAITING)  # the day's one generation, queued
    lost = JobFactory(owner=alice, status=JobStatus.FAILED)
    kept = JobFactory(owner=alice, status=JobStatus.FAILED, source_path="tmp/k/original.png")

    refused = alice_client.post(f"/api/jobs/{lost.id}/retry")
    assert refused.status_code == 429 and refused.json()["requested"] == 1
    assert Job.objects.get(pk=lost.pk).status == JobStatus.FAILED
    assert alice_client.post(f"/api/jobs/{kept.id}/retry").status_code == 200


# --- Reuse -----------------------------------------------------------------------------------


def test_reuse_takes_the_identical_original_without_paying_and_the_ledger_says_so(
    alice: Any, alice_client: Any, settings: Any
) -> None:
    original = submit(alice_client, "A lighthouse at dusk").json()["jobId"]
    assert run(original).status == JobStatus.COMPLETED
    assert ProviderCall.objects.get(job_id=original).outcome == CallOutcome.SUCCEEDED

    # Over the quota for a paid generation, but a reuse needs none.
    settings.DAILY_GENERATION_QUOTA = 1
    assert submit(alice_client, "Something new").status_code == 429
    accepted = submit(alice_client, "A lighthouse at dusk", reuse=True)
    assert accepted.status_code == 202
    again = accepted.json()["jobId"]
    assert alice_client.get(f"/api/jobs/{again}").json()["data"]["reuse"] is True

    job = run(again)
    assert job.status == JobStatus.COMPLETED and job.generation_calls == 0
    assert job.source_path and job.source_path != Job.objects.get(pk=original).source_path
    reused = ProviderCall.objects.get(job_id=again)
    assert (reused.outcome, reused.estimated_cost_usd, reused.call_number) == (
        CallOutcome.REUSED, 0, 0,
    )  # fmt: skip
    assert reused.request_id == f"reuse:{original}"


def test_without_reuse_or_without_an_original_the_job_pays(alice: Any, alice_client: Any) -> None:
    first = submit(alice_client, "A harbour").json()["jobId"]
    run(first)
    plain = submit(alice_client, "A harbour").json()["jobId"]  # reuse not asked
    other = submit(alice_client, "Another harbour", reuse=True).json()["jobId"]  # no original
    assert run(plain).generation_calls == 1 and run(other).generation_calls == 1
    assert ProviderCall.objects.filter(outcome=CallOutcome.SUCCEEDED).count() == 3


def test_reuse_must_be_a_boolean(alice_client: Any) -> None:
    response = submit(alice_client, reuse="yes")
    assert response.status_code == 400 and "reuse" in response.json()["details"]


# --- Waiting for a provider slot --------------------------------------------------------------


def test_a_job_with_no_provider_slot_waits_delayed_without_spending_an_attempt(
    alice: Any, alice_client: Any, limited: Any, use_fake_openai: FakeOpenAI, settings: Any
) -> None:
    settings.JOB_MAX_ATTEMPTS = 1
    assert isinstance(limited.acquire(waiter="someone-else"), Grant)  # this minute's call
    job_id = submit(alice_client, priority=5).json()["jobId"]

    countdown = job_run_generation(job_id=job_id)
    assert countdown is not None and 55 < countdown <= 62
    body = alice_client.get(f"/api/jobs/{job_id}").json()
    assert (body["status"], body["delayReason"], body["attemptsMade"]) == (
        "delayed", "provider-slot", 0,
    )  # fmt: skip
    next_run = datetime.fromisoformat(body["nextRunAt"])
    assert abs((next_run - timezone.now()).total_seconds() - countdown) < 2
    listed = alice_client.get("/api/jobs").json()["jobs"][0]
    assert (listed["delayReason"], listed["nextRunAt"]) == ("provider-slot", body["nextRunAt"])
    # Waiting is a line at the limiter, nothing was paid, and the line knows its priority.
    assert use_fake_openai.generation_calls == []
    assert [(w, p) for w, p, _ in limited.waiting()] == [(job_id, 5)]

    # Its turn comes: it runs on its only attempt (JOB_MAX_ATTEMPTS 1) and completes.
    limited.reset()
    Job.objects.filter(pk=job_id).update(retry_at=timezone.now())
    job = run(job_id)
    assert (job.status, job.attempts_made, job.generation_calls) == (JobStatus.COMPLETED, 1, 1)
    body = alice_client.get(f"/api/jobs/{job_id}").json()
    assert body["delayReason"] is None and body["nextRunAt"] is None


def test_a_429_of_the_provider_delays_every_job_until_its_retry_after(
    alice: Any, alice_client: Any, limited: Any, use_fake_openai: FakeOpenAI, settings: Any
) -> None:
    settings.OPENAI_IMAGES_PER_MINUTE = 0  # the limit is learnt from the provider
    limiter = provider_limiter()
    limiter.reset()
    use_fake_openai.rate_limit(retry_after="30")
    refused = submit(alice_client, "Refused").json()["jobId"]
    assert job_run_generation(job_id=refused) == pytest.approx(30, abs=1)
    assert Job.objects.get(pk=refused).delay_reason == "retry"  # its attempt was spent
    call = ProviderCall.objects.get(job_id=refused)
    assert call.outcome == CallOutcome.FAILED and call.request_id

    other = submit(alice_client, "Anyone else").json()["jobId"]
    countdown = job_run_generation(job_id=other)
    assert countdown is not None and 28 < countdown <= 30
    assert Job.objects.get(pk=other).delay_reason == "provider-slot"
    assert len(use_fake_openai.generation_calls) == 1
    assert isinstance(limiter.acquire(waiter="probe"), Wait)
    limiter.reset()


def test_a_paid_answer_whose_download_failed_is_on_the_books_as_paid_once(
    alice: Any, alice_client: Any, use_fake_openai: FakeOpenAI
) -> None:
    use_fake_openai.script.append(use_fake_openai.url_answer(file_status=502, then_status=200))
    job_id = submit(alice_client, "Answered with a link").json()["jobId"]
    assert job_run_generation(job_id=job_id) is not None  # delayed: the download failed
    call = ProviderCall.objects.get(job_id=job_id)
    assert call.outcome == CallOutcome.SUCCEEDED and call.estimated_cost_usd > 0

    Job.objects.filter(pk=job_id).update(retry_at=timezone.now())
    job = run(job_id)  # downloads the paid link, no new call
    assert (job.status, job.generation_calls) == (JobStatus.COMPLETED, 1)
    assert list(ProviderCall.objects.filter(job_id=job_id)) == [call]
    assert len(use_fake_openai.generation_calls) == 1


def test_a_concurrency_cap_makes_a_job_wait_for_a_call_in_flight_to_end(
    alice: Any, alice_client: Any, limited: Any, settings: Any
) -> None:
    settings.OPENAI_IMAGES_PER_MINUTE = 0
    settings.OPENAI_MAX_CONCURRENT = 1
    capped = provider_limiter()
    capped.reset()
    in_flight = capped.acquire(waiter="another-job")
    assert isinstance(in_flight, Grant) and in_flight.lease
    job_id = submit(alice_client, "Second in flight").json()["jobId"]
    assert job_run_generation(job_id=job_id) is not None
    body = alice_client.get(f"/api/jobs/{job_id}").json()
    assert (body["status"], body["delayReason"], body["attemptsMade"]) == (
        "delayed", "provider-slot", 0,
    )  # fmt: skip

    capped.release(in_flight)
    Job.objects.filter(pk=job_id).update(retry_at=timezone.now())
    assert run(job_id).status == JobStatus.COMPLETED
    assert capped.client.zcard(capped.keys[2]) == 0  # its own lease ended with its call
    capped.reset()


def test_a_job_cancelled_while_waiting_for_its_slot_leaves_the_line(
    alice: Any, alice_client: Any, limited: Any, django_capture_on_commit_callbacks: Any
) -> None:
    assert isinstance(limited.acquire(waiter="someone-else"), Grant)
    job_id = submit(alice_client, priority=9).json()["jobId"]
    job_run_generation(job_id=job_id)
    assert [w for w, _, _ in limited.waiting()] == [job_id]

    with django_capture_on_commit_callbacks(execute=True):
        assert alice_client.delete(f"/api/jobs/{job_id}").status_code == 200
    assert limited.waiting() == []


def test_a_batch_counts_only_the_jobs_that_will_pay_against_the_quota(
    alice: Any, alice_client: Any, settings: Any
) -> None:
    original = submit(alice_client, "A lighthouse at dusk").json()["jobId"]
    run(original)
    settings.DAILY_GENERATION_QUOTA = 2  # one used today: one more paid generation left

    def batch(*bodies: dict[str, Any]) -> Any:
        items = [{"platforms": ONE, **body} for body in bodies]
        return alice_client.post("/api/jobs/generate/batch", items, format="json")

    refused = batch({"prompt": "New one"}, {"prompt": "Another new one"})
    assert refused.status_code == 429 and refused.json()["requested"] == 2
    accepted = batch({"prompt": "A lighthouse at dusk", "reuse": True}, {"prompt": "New one"})
    assert accepted.status_code == 200 and accepted.json()["accepted"] == 2
    jobs = [item["job"]["jobId"] for item in accepted.json()["results"]]
    assert [Job.objects.get(pk=j).reuse for j in jobs] == [True, False]
