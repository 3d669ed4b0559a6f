"""The Supabase sync through the real processes: HTTP to uvicorn, a Celery worker process on
the images and webhooks queues, celery beat, and the loopback Supabase fake (Storage for the
files, PostgREST for the old server's tables) reached with the real ``supabase`` client."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs.supabase_sync.models import SyncEvent, SyncState
from tests.conftest import ManagedProcess, api_key_for, child_env, free_port, make_user, wait_until
from tests.fakes.fixtures import supabase_env
from tests.fakes.supabase_server import FakeSupabase
from tests.jobs.faults import celery_app_on

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLATFORMS = ["instagram-post", "twitter-post", "linkedin-post"]
DONE = ("completed", sorted(PLATFORMS))


def sync_env(fake: FakeSupabase) -> dict[str, str]:
    return {
        **supabase_env(fake),
        "SUPABASE_SYNC_TABLES": "true",
        "SUPABASE_SYNC_TIMEOUT_SECONDS": "1",
        "SUPABASE_SYNC_RETRY_SCHEDULE": ",".join(["1"] * 30),
        "SUPABASE_SYNC_DRAIN_INTERVAL_SECONDS": "1",
    }


def submit(base: str, headers: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "A red fox in the snow", "platforms": PLATFORMS},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def status_of(base: str, headers: dict[str, str], job_id: str) -> str:
    return str(httpx.get(f"{base}/api/jobs/{job_id}", headers=headers, timeout=10).json()["status"])


def mirrored(fake: FakeSupabase, generation_id: str) -> tuple[str | None, list[str]]:
    rows = fake.rows("generations", id=generation_id)
    images = fake.rows("generated_images", generation_id=generation_id)
    return (rows[0]["status"] if rows else None), sorted(i["platform_id"] for i in images)


def test_a_job_run_by_the_worker_ends_completed_in_supabase_with_one_row_per_image(
    fake_supabase: FakeSupabase, start_web: Any, start_worker: Any
) -> None:
    env = sync_env(fake_supabase)
    headers = {"Authorization": f"Bearer {api_key_for(make_user('alice'))}"}
    base = start_web(env=env)
    start_worker(queues="images,webhooks", env=env)

    submitted = submit(base, headers)
    wait_until(
        lambda: mirrored(fake_supabase, submitted["generationId"]) == DONE,
        timeout=60, interval=0.2, what="the completed generation and its images in Supabase",
    )  # fmt: skip

    assert status_of(base, headers, submitted["jobId"]) == "completed"
    [row] = fake_supabase.rows("generations")
    assert (row["id"], row["user_id"], row["error_message"]) == (
        submitted["generationId"], "alice", None,
    )  # fmt: skip
    result = httpx.get(f"{base}/api/jobs/{submitted['jobId']}/result", headers=headers).json()
    urls = {i["platformId"]: i["url"] for i in result["result"]["images"]}
    for image in fake_supabase.rows("generated_images"):
        assert image["url"] == urls[image["platform_id"]]
        assert image["storage_path"].startswith(f"alice/{submitted['generationId']}/")
    assert all(e.state in (SyncState.SYNCED, SyncState.SUPERSEDED) for e in SyncEvent.objects.all())


def test_supabase_s_database_slow_never_delays_a_job_and_its_rows_arrive_once_it_answers(
    fake_supabase: FakeSupabase, start_web: Any, start_worker: Any
) -> None:
    env = sync_env(fake_supabase)
    headers = {"Authorization": f"Bearer {api_key_for(make_user('alice'))}"}
    base = start_web(env=env)
    # As the Procfile runs them: image jobs and the webhooks queue in workers of their own.
    start_worker(queues="images", env=env)
    start_worker(queues="webhooks", env=env)
    # Every PostgREST answer takes 3 s, past the 1 s timeout of a push; Storage is fine.
    fake_supabase.slow(3, for_seconds=600, path_contains="/rest/v1/")

    started = time.monotonic()
    submitted = submit(base, headers)
    wait_until(
        lambda: status_of(base, headers, submitted["jobId"]) == "completed",
        timeout=15, interval=0.1, what="the job to complete",
    )  # fmt: skip
    took = time.monotonic() - started

    assert took < 10, f"the job took {took:.1f} s with Supabase's database slow"
    assert mirrored(fake_supabase, submitted["generationId"])[0] != "completed"
    wait_until(
        lambda: SyncEvent.objects.filter(attempts__gte=1).exclude(last_error="").exists(),
        timeout=30, interval=0.2, what="a push to time out and be recorded",
    )  # fmt: skip
    assert "Timeout" in SyncEvent.objects.exclude(last_error="").first().last_error  # type: ignore[union-attr]

    fake_supabase.recover()
    wait_until(
        lambda: mirrored(fake_supabase, submitted["generationId"]) == DONE,
        timeout=60, interval=0.2, what="the rows to arrive once Supabase answers",
    )  # fmt: skip
    assert len(fake_supabase.rows("generated_images")) == len(PLATFORMS)


def test_beat_drains_the_events_whose_message_never_left(
    settings: Any, fake_supabase: FakeSupabase, start_worker: Any, tmp_path: Path
) -> None:
    from jobs.services.submission import job_create_generation

    env = sync_env(fake_supabase)
    settings.SUPABASE_SYNC_TABLES = True
    alice = make_user("alice")
    # Submitted while the broker is down: the job's row and its outbox event commit, their
    # messages never leave.
    with celery_app_on(f"redis://127.0.0.1:{free_port()}/0"):
        job = job_create_generation(actor=alice, prompt="A red fox", platforms=["twitter-post"]).job
    [event] = SyncEvent.objects.filter(job=job)
    assert event.enqueued_at is None and event.state == SyncState.PENDING

    start_worker(queues="webhooks", env=env)
    beat = ManagedProcess(
        "beat",
        [sys.executable, "-m", "celery", "-A", "snapasset", "beat", "-l", "info",
         "-s", str(tmp_path / "celerybeat-schedule")],
        child_env(**env),
        tmp_path,
    )  # fmt: skip
    try:
        wait_until(
            lambda: mirrored(fake_supabase, str(job.generation_id))[0] == "pending",
            timeout=60, interval=0.3, what="beat to drain the event",
        )  # fmt: skip
    finally:
        beat.stop()
    assert "supabase_sync.drain_due" in beat.output()
    event.refresh_from_db()
    assert (event.state, event.attempts) == (SyncState.SYNCED, 1)
