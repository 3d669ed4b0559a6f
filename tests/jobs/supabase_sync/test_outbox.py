"""The Supabase sync in-process, against the loopback Supabase fake through the real
``supabase`` client: what the old server's tables show as a job runs, that retries never
duplicate or move a status back, that Supabase down loses nothing, and the admin's view."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import Job, JobStatus
from jobs.services.control import job_cancel, job_retry
from jobs.services.generation import job_run_generation
from jobs.services.lease import job_claim
from jobs.services.outcomes import job_fail
from jobs.supabase_sync import services
from jobs.supabase_sync.models import SyncEvent, SyncState
from tests.fakes.supabase_server import FakeSupabase
from tests.jobs.supabase_sync.conftest import push_all

pytestmark = pytest.mark.django_db

PLATFORMS = ["instagram-post", "twitter-post", "linkedin-post"]


def submit(client: APIClient, committing: Callable[..., Any], **body: Any) -> Job:
    response = committing(
        lambda: client.post(
            "/api/jobs/generate",
            {"prompt": "A red fox in the snow", "platforms": PLATFORMS, **body},
            format="json",
        )
    )
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["jobId"])


def run(job: Job, committing: Callable[..., Any]) -> Job:
    committing(lambda: job_run_generation(job_id=str(job.pk)))
    job.refresh_from_db()
    return job


def generation(fake: FakeSupabase, job: Job) -> dict[str, Any]:
    [row] = fake.rows("generations", id=str(job.generation_id))
    return row


def test_a_submitted_job_gets_its_generations_row_as_the_old_server_made_it(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    job = submit(alice_client, committing)

    assert push_all(job) == ["created"]
    row = generation(sync_on, job)
    assert (row["status"], row["user_id"], row["prompt"], row["error_message"]) == (
        "pending", "alice", "A red fox in the snow", None,
    )  # fmt: skip
    assert sync_on.rows("generated_images") == []


def test_a_completed_job_ends_completed_with_one_image_row_per_platform(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    job = run(submit(alice_client, committing), committing)
    assert job.status == JobStatus.COMPLETED

    events = list(SyncEvent.objects.filter(job=job).order_by("pk"))
    assert [e.status for e in events] == ["pending", "processing", "completed"]
    # The older events are superseded by the newest: one status write and one image upsert.
    assert push_all(job) == [None, None, "updated"]
    assert [e.state for e in SyncEvent.objects.filter(job=job).order_by("pk")] == [
        SyncState.SUPERSEDED, SyncState.SUPERSEDED, SyncState.SYNCED,
    ]  # fmt: skip
    assert generation(sync_on, job)["status"] == "completed"
    images = sync_on.rows("generated_images", generation_id=str(job.generation_id))
    assert sorted(i["platform_id"] for i in images) == sorted(PLATFORMS)
    by_platform = {i["platform_id"]: i for i in images}
    recorded = {image.platform_id: image for image in job.images.all()}
    for platform_id, image in recorded.items():
        row = by_platform[platform_id]
        assert (row["width"], row["height"], row["file_size"], row["storage_path"], row["url"]) == (
            image.width, image.height, image.file_size, image.storage_path, image.url,
        )  # fmt: skip
    assert by_platform["twitter-post"]["platform_name"] == "Twitter Post"
    assert (by_platform["twitter-post"]["width"], by_platform["twitter-post"]["height"]) == (
        1200, 675,
    )  # fmt: skip


def test_pushing_again_never_duplicates_a_row(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    job = run(submit(alice_client, committing), committing)
    push_all(job)
    # The worker repeats a push (a message delivered twice, an operator's retry).
    for event in SyncEvent.objects.filter(job=job):
        services.event_retry(event=event)
    push_all(job)

    images = sync_on.rows("generated_images", generation_id=str(job.generation_id))
    assert sorted(i["platform_id"] for i in images) == sorted(PLATFORMS)
    assert len(sync_on.rows("generations")) == 1
    assert generation(sync_on, job)["status"] == "completed"
    upserts = sync_on.seen("POST", "/rest/v1/generated_images")
    assert len(upserts) == 2 and all(
        r.query["on_conflict"] == ["generation_id,platform_id"]
        and "resolution=merge-duplicates" in (r.header("prefer") or "")
        for r in upserts
    )


def test_a_job_that_failed_half_way_then_was_retried_and_resumed_keeps_one_row_per_image(
    settings: Any,
    sync_on: FakeSupabase,
    use_fake_supabase: FakeSupabase,
    alice_client: APIClient,
    committing: Callable[..., Any],
) -> None:
    settings.JOB_RETRY_BACKOFF_SECONDS = 0
    # Storage refuses one platform's file for good: the job fails with the others made.
    use_fake_supabase.fail_json(
        "POST", "/twitter-post.png", status=403, error="Unauthorized", message="denied"
    )
    job = run(submit(alice_client, committing), committing)
    assert job.status == JobStatus.FAILED
    made = sorted(job.images.values_list("platform_id", flat=True))
    assert made and "twitter-post" not in made
    push_all(job)
    assert generation(sync_on, job)["status"] == "failed"
    images = sync_on.rows("generated_images", generation_id=str(job.generation_id))
    assert sorted(i["platform_id"] for i in images) == made

    # Retried: it resumes, a transient error on the way (delayed, then run again).
    use_fake_supabase.fail("POST", "/twitter-post.png", status=503)
    committing(lambda: job_retry(job=job))
    job = run(job, committing)
    assert job.status == JobStatus.DELAYED
    job = run(job, committing)
    assert job.status == JobStatus.COMPLETED
    push_all(job)

    images = sync_on.rows("generated_images", generation_id=str(job.generation_id))
    assert sorted(i["platform_id"] for i in images) == sorted(PLATFORMS)
    row = generation(sync_on, job)
    assert (row["status"], row["error_message"]) == ("completed", None)


def test_an_older_status_pushed_late_never_moves_a_newer_one_back(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    job = run(submit(alice_client, committing), committing)
    first, active, completed = SyncEvent.objects.filter(job=job).order_by("pk")
    SyncEvent.objects.filter(pk=completed.pk).update(next_attempt_at=timezone.now())
    # Nothing written yet: the row is made first (for the images' foreign key), then the
    # status moves it on.
    assert services.event_push(event_id=completed.pk) == "updated"
    # The "processing" write arrives after "completed" (a slow message, a retry): it is
    # refused by the condition on updated_at, not applied.
    outcome = services.tables.status_write(
        job, status=active.status, error_message="", version=active.version
    )

    assert outcome == "kept-newer"
    assert generation(sync_on, job)["status"] == "completed"


def test_a_failed_job_mirrors_its_status_and_error_message(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    job = submit(alice_client, committing)

    def fail() -> None:
        claim = job_claim(job_id=str(job.pk))
        assert claim is not None
        job_fail(job_id=str(job.pk), token=claim.token, reason="Content policy violation")

    committing(fail)
    push_all(job)

    row = generation(sync_on, job)
    assert (row["status"], row["error_message"]) == ("failed", "Content policy violation")

    # Retried by its owner: back to pending, the error cleared.
    job.refresh_from_db()
    committing(lambda: job_retry(job=job))
    push_all(job)
    assert (generation(sync_on, job)["status"], generation(sync_on, job)["error_message"]) == (
        "pending", None,
    )  # fmt: skip


def test_a_cancelled_job_is_cancelled_in_supabase(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    job = submit(alice_client, committing)
    push_all(job)
    committing(lambda: job_cancel(job=job))
    push_all(job)

    assert generation(sync_on, job)["status"] == "cancelled"
    assert sync_on.rows("generated_images") == []


def test_a_job_submitted_before_the_sync_was_on_gets_its_row_when_it_ends(
    settings: Any,
    sync_on: FakeSupabase,
    alice_client: APIClient,
    committing: Callable[..., Any],
) -> None:
    settings.SUPABASE_SYNC_TABLES = False
    job = submit(alice_client, committing)
    settings.SUPABASE_SYNC_TABLES = True
    job = run(job, committing)
    push_all(job)

    row = generation(sync_on, job)
    assert (row["status"], row["user_id"]) == ("completed", "alice")
    images = sync_on.rows("generated_images", generation_id=str(job.generation_id))
    assert len(images) == len(PLATFORMS)


def test_a_generations_row_deleted_in_supabase_is_made_again_with_the_job_s_images(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    job = submit(alice_client, committing)
    push_all(job)
    with sync_on.data_lock:
        sync_on.tables["generations"].clear()
    job = run(job, committing)
    push_all(job)

    assert generation(sync_on, job)["status"] == "completed"
    assert len(sync_on.rows("generated_images", generation_id=str(job.generation_id))) == 3
    # The images met the foreign key once, then the row was made and they went in.
    answers = [r.status for r in sync_on.seen("POST", "/rest/v1/generated_images")]
    assert answers == [409, 201]


def test_supabase_down_leaves_the_job_alone_and_the_rows_arrive_once_it_answers(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    sync_on.fail("POST", "/rest/v1/", status=503, times=1000)
    sync_on.fail("PATCH", "/rest/v1/", status=503, times=1000)
    job = run(submit(alice_client, committing), committing)
    assert job.status == JobStatus.COMPLETED

    push_all(job)
    event = SyncEvent.objects.filter(job=job).order_by("pk").last()
    assert event is not None
    assert (event.state, event.attempts, event.status) == (SyncState.PENDING, 1, "completed")
    assert "503" in event.last_error
    assert event.next_attempt_at is not None and event.next_attempt_at > timezone.now()

    sync_on.recover()
    push_all(job)
    event.refresh_from_db()
    assert (event.state, event.attempts, event.last_error) == (SyncState.SYNCED, 2, "")
    assert generation(sync_on, job)["status"] == "completed"
    assert len(sync_on.rows("generated_images")) == len(PLATFORMS)


def test_an_event_that_used_up_its_retries_is_failed_and_can_be_pushed_again(
    sync_on: FakeSupabase, alice_client: APIClient, committing: Callable[..., Any]
) -> None:
    sync_on.fail("PATCH", "/rest/v1/generations", status=500, times=1000)
    job = submit(alice_client, committing)
    for _ in range(4):  # the first push and the schedule's three retries
        push_all(job)
    event = SyncEvent.objects.get(job=job)
    assert (event.state, event.attempts) == (SyncState.FAILED, 4)

    sync_on.recover()
    services.event_retry(event=event)
    push_all(job)
    event.refresh_from_db()
    assert event.state == SyncState.SYNCED
    assert generation(sync_on, job)["status"] == "pending"


def test_the_outbox_costs_a_status_change_one_insert_in_its_own_transaction(
    settings: Any, sync_on: FakeSupabase, alice: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import JobFactory

    def cancel_queries(sync: bool) -> list[str]:
        settings.SUPABASE_SYNC_TABLES = sync
        job = JobFactory(owner=alice)
        with CaptureQueriesContext(connection) as captured:
            job_cancel(job=job)
        return [q["sql"] for q in captured.captured_queries]

    off, on = cancel_queries(False), cancel_queries(True)

    def kinds(queries: list[str]) -> Counter[str]:
        return Counter(sql.split()[0].upper() for sql in queries)

    # One more statement, an INSERT into the outbox: no other query, savepoint or commit.
    assert kinds(on) - kinds(off) == Counter({"INSERT": 1}) and len(on) == len(off) + 1
    assert [sql for sql in on if "supabase_sync_syncevent" in sql][0].startswith("INSERT")
    assert sync_on.requests == []  # nothing talks to Supabase inside the change


def test_with_the_sync_off_by_default_nothing_is_recorded_or_sent(
    settings: Any,
    fake_supabase: FakeSupabase,
    alice_client: APIClient,
    committing: Callable[..., Any],
) -> None:
    assert settings.SUPABASE_SYNC_TABLES is False
    settings.SUPABASE_URL = fake_supabase.url
    job = run(submit(alice_client, committing), committing)

    assert job.status == JobStatus.COMPLETED
    assert not SyncEvent.objects.exists()
    assert fake_supabase.seen("POST", "/rest/v1/") == []
    assert fake_supabase.seen("PATCH", "/rest/v1/") == []


def test_switched_off_the_pending_events_wait_and_go_once_it_is_on_again(
    settings: Any,
    sync_on: FakeSupabase,
    alice_client: APIClient,
    committing: Callable[..., Any],
) -> None:
    job = submit(alice_client, committing)
    settings.SUPABASE_SYNC_TABLES = False
    assert push_all(job) == [None]
    assert SyncEvent.objects.get(job=job).state == SyncState.PENDING
    assert sync_on.rows("generations") == []

    settings.SUPABASE_SYNC_TABLES = True
    assert push_all(job) == ["created"]


def test_the_backlog_of_events_not_in_supabase_is_on_metrics(
    sync_on: FakeSupabase,
    alice_client: APIClient,
    staff_client: APIClient,
    committing: Callable[..., Any],
) -> None:
    sync_on.fail("POST", "/rest/v1/", status=503, times=1000)
    sync_on.fail("PATCH", "/rest/v1/", status=503, times=1000)
    for _ in range(2):
        push_all(submit(alice_client, committing))

    text = staff_client.get("/metrics").content.decode()
    assert 'snapasset_supabase_sync_events{state="pending"} 2.0' in text
    assert 'snapasset_supabase_sync_events{state="failed"} 0.0' in text
    age = re.search(r"^snapasset_supabase_sync_oldest_pending_seconds (\S+)$", text, re.M)
    assert age is not None and float(age[1]) > 0

    sync_on.recover()
    for job in Job.objects.all():
        push_all(job)
    text = staff_client.get("/metrics").content.decode()
    assert 'snapasset_supabase_sync_events{state="pending"} 0.0' in text
    assert "snapasset_supabase_sync_oldest_pending_seconds 0.0" in text


def test_staff_see_each_event_with_its_attempts_and_last_error_and_can_retry_it(
    sync_on: FakeSupabase,
    alice_client: APIClient,
    committing: Callable[..., Any],
    admin_client: Client,
) -> None:
    sync_on.fail("PATCH", "/rest/v1/generations", status=503, times=1)
    job = submit(alice_client, committing)
    push_all(job)
    event = SyncEvent.objects.get(job=job)

    page = admin_client.get("/admin/supabase_sync/syncevent/")
    assert page.status_code == 200
    text = page.content.decode()
    assert str(job.pk)[:8] in text and "PostgREST 503" in text
    detail = admin_client.get(f"/admin/supabase_sync/syncevent/{event.pk}/change/")
    assert detail.status_code == 200 and "503" in detail.content.decode()

    response = committing(
        lambda: admin_client.post(
            "/admin/supabase_sync/syncevent/",
            {"action": "retry_now", "_selected_action": [event.pk]},
        )
    )
    assert response.status_code == 302
    event.refresh_from_db()
    assert (event.state, event.attempts) == (SyncState.PENDING, 0)
    push_all(job)
    assert generation(sync_on, job)["status"] == "pending"
