"""Regression tests of issue 13's lifecycle defects (#1-#4, #7-#9), each seen failing on main
before the fix.

Most go through the real processes (web, workers, beat on a Redis of their own, the OpenAI
and Supabase fakes) and HTTP, so they hold whatever the module layout. Two can only be
provoked from inside (a database error in one particular write): they call the
service functions and inject the error at the SQL level, as a comment in each says.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from tests.chaos.stack import ApiClient, ChaosStack, images_downloadable, paid_calls
from tests.conftest import make_user, wait_until
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.supabase_server import FakeSupabase

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A production knob that makes each platform step take a second or more (PNG at zlib 9).
SLOW_STEPS = {"PNG_COMPRESS_LEVEL": "9"}


# --- Helpers ------------------------------------------------------------------------------


@contextmanager
def database_error_once(matches: Callable[[str], bool]) -> Iterator[threading.Event]:
    """The first SQL statement that ``matches`` (from any thread of this process) fails
    with OperationalError, as on a dropped connection, a pool timeout or a failover; the
    event is set once it happened."""
    happened = threading.Event()
    original = CursorWrapper.execute

    def execute(self: CursorWrapper, sql: str, params: Any = None) -> Any:
        if not happened.is_set() and matches(sql):
            happened.set()
            raise OperationalError("server closed the connection unexpectedly (injected)")
        return original(self, sql, params)

    CursorWrapper.execute = execute  # type: ignore[method-assign]
    try:
        yield happened
    finally:
        CursorWrapper.execute = original  # type: ignore[method-assign]


def is_job_update(sql: str, column: str, *, fenced: bool = False) -> bool:
    """An UPDATE of the job table that sets ``column`` (and, when ``fenced``, is conditional
    on the claim token: a write of the attempt holding the job)."""
    if not re.match(r'\s*UPDATE "jobs_job" SET', sql):
        return False
    assignments, _, condition = sql.partition(" WHERE ")
    return f'"{column}"' in assignments and (not fenced or '"claim_token"' in condition)


# --- 1. Cancel, then retry ------------------------------------------------------------------


def test_a_job_cancelled_while_waiting_then_retried_runs_to_completion(
    live_stack: Callable[..., ChaosStack], fake_openai: FakeOpenAI
) -> None:
    stack = live_stack()
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    stack.start_worker("images0", concurrency=1)
    stack.start_worker("cleanup", queues="cleanup")
    stack.start_beat()

    fake_openai.queue_b64(delay=6)  # the first job keeps the only worker process busy
    busy = alice.submit("Keeps the worker busy", platforms=["twitter-post"])
    alice.wait_status(busy, "active", timeout=60)
    job_id = alice.submit("Cancelled, then retried", platforms=["twitter-post"])
    assert alice.request("DELETE", f"/api/jobs/{job_id}").status_code == 200
    assert alice.request("POST", f"/api/jobs/{job_id}/retry").status_code == 200

    body = alice.wait_status(job_id, "completed", "failed", timeout=60)
    assert body["status"] == "completed", body


# --- 2. A database error in the heartbeat thread ----------------------------------------------


def test_one_database_error_does_not_end_a_running_jobs_heartbeat(
    transactional_db: None, settings: Any
) -> None:
    """From inside: the heartbeat thread of ``jobs.services.lease.job_heartbeat`` gets one
    OperationalError on its heartbeat UPDATE; the heartbeat must go on. What it exercises:
    a claimed job's liveness survives a database blip."""
    from jobs.models import Job
    from jobs.services.lease import job_claim, job_heartbeat

    settings.JOB_HEARTBEAT_SECONDS = 1
    job = Job.objects.create(
        owner=make_user("erin"), kind="image-generation", prompt="Long call",
        platforms=["twitter-post"],
    )  # fmt: skip
    claim = job_claim(job_id=str(job.id))
    assert claim is not None
    main = threading.main_thread()

    def heartbeat_write(sql: str) -> bool:
        return threading.current_thread() is not main and is_job_update(sql, "heartbeat_at")

    with database_error_once(heartbeat_write) as failed, job_heartbeat(claim):
        wait_until(failed.is_set, timeout=10, what="the heartbeat's write to fail once")
        after_error = timezone.now()
        time.sleep(3.5)  # three heartbeat periods
        job.refresh_from_db()
    assert job.heartbeat_at is not None and job.heartbeat_at > after_error, (
        f"no heartbeat since the error at {after_error} (last {job.heartbeat_at})"
    )


# --- 3. SIGTERM during the paid call ------------------------------------------------------------


def test_a_worker_stopped_during_the_paid_call_does_not_make_the_next_attempt_pay_again(
    live_stack: Callable[..., ChaosStack], fake_openai: FakeOpenAI
) -> None:
    stack = live_stack(JOB_SHUTDOWN_GRACE_SECONDS="1")
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    stopping = stack.start_worker("images0")
    fake_openai.queue_b64(delay=6)  # the paid call outlives the 1 s grace period
    job_id = alice.submit("Stopped mid-call [sigterm]", platforms=["twitter-post"])
    wait_until(lambda: fake_openai.generation_calls, timeout=60, what="the paid call")

    stopping.terminate()
    stopping.managed.proc.wait(timeout=60)
    stack.start_worker("images1")
    body = alice.wait_status(job_id, "completed", "failed", timeout=90)
    assert body["status"] == "completed", body
    calls = paid_calls(fake_openai, "[sigterm]")
    assert len(calls) == 1, f"the image model was paid {len(calls)} times: " + ", ".join(
        f"{call.tag} at {call.started:.1f}" for call in calls
    )


# --- 4. The sweeper starves -------------------------------------------------------------------


def test_a_lost_message_is_sent_again_behind_a_backlog_of_500_newer_jobs(
    live_stack: Callable[..., ChaosStack],
) -> None:
    stack = live_stack(JOB_MAX_PENDING_PER_USER="1000")
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    lost = alice.submit("Its message is lost", platforms=["twitter-post"])
    stack.redis.flush()
    with httpx.Client(headers=alice.headers, timeout=30) as http:
        for n in range(500):
            response = http.post(
                f"{stack.base}/api/jobs/generate",
                json={"prompt": f"Backlog {n}", "platforms": ["twitter-post"]},
            )
            assert response.status_code == 202, response.text
    time.sleep(6)  # every job of the backlog is overdue too (JOB_ENQUEUE_OVERDUE_SECONDS 5)
    # No images worker: the backlog stays queued, and only the sweeper can resend `lost`.
    stack.start_worker("cleanup", queues="cleanup")
    stack.start_beat()
    wait_until(
        lambda: lost in stack.redis.queued_job_ids("images"),
        timeout=45,
        interval=1,
        what="the lost message to be sent again",
    )


def test_a_lost_message_is_sent_again_behind_a_backlog_longer_than_the_scan_limit(
    live_stack: Callable[..., ChaosStack],
) -> None:
    import json

    stack = live_stack()
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    lost = alice.submit("Its message is lost", platforms=["twitter-post"])
    stack.redis.flush()
    # A backlog of 50,001 other messages (minimal ones: only their task id is read).
    client = stack.redis.client()
    pipe = client.pipeline(transaction=False)
    for n in range(50_001):
        pipe.rpush("images", json.dumps({"headers": {"id": f"backlog-{n}"}, "properties": {}}))
    pipe.execute()
    stack.start_worker("cleanup", queues="cleanup")
    stack.start_beat()
    wait_until(
        lambda: (
            lost
            in {
                str(json.loads(raw)["headers"]["id"]).partition(".")[0]
                for key in client.keys("images:*")
                for raw in client.lrange(key, 0, -1)
            }
        ),
        timeout=45,
        interval=1,
        what="the lost message to be sent again",
    )


# --- 7. A database blip in a fenced write ----------------------------------------------------


def test_a_database_error_in_a_fenced_write_retries_the_job_instead_of_failing_it(
    transactional_db: None, settings: Any
) -> None:
    """From inside: ``jobs.services.generation.job_run_generation`` (the pipeline a worker runs
    for a job id) with the local provider, where the UPDATE
    that records a platform's progress fails once with OperationalError."""
    from jobs.models import Job
    from jobs.services.generation import job_run_generation

    job = Job.objects.create(
        owner=make_user("frank"), kind="image-generation", prompt="A blip",
        platforms=["twitter-post", "instagram-post"],
    )  # fmt: skip
    fenced_progress = lambda sql: is_job_update(sql, "progress", fenced=True)  # noqa: E731
    with database_error_once(fenced_progress) as failed:
        try:
            job_run_generation(job_id=str(job.id))
        except OperationalError:
            pass  # raising is fine (the task's message is redelivered); failing the job is not
    assert failed.is_set(), "the fault was not injected: no UPDATE of the job's progress"
    job.refresh_from_db()
    assert job.status != "failed", f"the job failed for good: {job.failed_reason}"


# --- 8. A failed download of a `url` answer ----------------------------------------------------


def test_a_failed_download_of_a_url_answer_is_retried_without_paying_again(
    live_stack: Callable[..., ChaosStack], fake_openai: FakeOpenAI
) -> None:
    stack = live_stack()
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    stack.start_worker("images0")
    fake_openai.script.append(fake_openai.url_answer(file_status=503, then_status=200))
    job_id = alice.submit("Answered as a URL [url]", platforms=["twitter-post"])

    body = alice.wait_status(job_id, "completed", "failed", timeout=90)
    assert body["status"] == "completed", body
    calls = paid_calls(fake_openai, "[url]")
    assert len(calls) == 1, f"the image model was paid {len(calls)} times"


# --- 9. Cancel clean-up is not fenced ------------------------------------------------------------


def test_a_cancelled_runs_clean_up_leaves_the_retried_runs_images_alone(
    live_stack: Callable[..., ChaosStack], fake_openai: FakeOpenAI, fake_supabase: FakeSupabase
) -> None:
    stack = live_stack(supabase=fake_supabase)
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    cancelled_run = stack.start_worker("images0")
    # The first run stores each image slowly (cancelled between two) and cleans up slowly.
    fake_supabase.slow(4, for_seconds=300, method="POST", tag=cancelled_run.tag)
    fake_supabase.slow(5, for_seconds=300, method="DELETE")
    platforms = ["instagram-story", "youtube-thumbnail"]
    job_id = alice.submit("Cancelled, then retried mid-clean-up", platforms=platforms)
    wait_until(lambda: fake_openai.generation_calls, timeout=60, what="the first run to start")
    outputs = [f"/{platform}." for platform in platforms]
    wait_until(
        lambda: any(o in u.name for u in fake_supabase.uploads for o in outputs),
        timeout=90,
        what="a first platform image",
    )
    assert alice.request("DELETE", f"/api/jobs/{job_id}").status_code == 200
    # The retry's worker starts after the cancel and without mingle, so it has not heard of
    # the revoke of the job's task id (#1, a different defect).
    stack.start_worker("images1", options=("--without-mingle",))
    wait_until(
        lambda: any(r.tag == cancelled_run.tag for r in fake_supabase.seen("DELETE")),
        timeout=60,
        what="the cancelled run to start removing its outputs",
    )
    assert alice.request("POST", f"/api/jobs/{job_id}/retry").status_code == 200
    alice.wait_status(job_id, "completed", "failed", timeout=90)
    wait_until(
        lambda: "partial outputs removed" in cancelled_run.output(),
        timeout=60,
        what="the cancelled run's clean-up to end",
    )

    body = alice.job(job_id)
    assert body["status"] == "completed", body
    assert sorted(images_downloadable(alice, job_id)) == sorted(platforms)
