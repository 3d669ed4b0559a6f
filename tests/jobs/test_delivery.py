"""No job lost, none run twice, no image paid twice: faults, stalls, cancellation, priority.

Real Postgres, a real Redis of each test's own (so it can be flushed, stopped and started)
and real worker, beat and uvicorn processes. The image model is the local provider; the
paid call is counted by ``Job.generation_calls``.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from jobs.models import GeneratedImage, Job, JobStatus
from jobs.platforms import PLATFORM_IDS
from tests.conftest import make_user, wait_until
from tests.jobs.faults import (
    SLOW_STEPS,
    RedisServer,
    Stack,
    celery_app_on,
    media_files,
    pool_processes,
    sigkill,
    sigterm_main,
    wait_all_finished,
    wait_for_job,
)

pytestmark = pytest.mark.e2e


def assert_one_set_of_images(job: Job, platforms: list[str] | tuple[str, ...]) -> None:
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.failed_reason
    assert sorted(job.images.values_list("platform_id", flat=True)) == sorted(platforms)
    assert job.generation_calls == 1, "the image model was paid more than once"


# --- Delivery after a dead worker ------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_after_the_generation_step_is_replaced_and_the_job_completes_paying_once(
    stack: Stack, media_root: Path
) -> None:
    stack.web()
    stack.maintenance()
    doomed = stack.worker(**SLOW_STEPS)
    job_id = stack.submit()

    wait_for_job(job_id, lambda job: bool(job.source_path), timeout=60, what="the generation step")
    sigkill(doomed)
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.ACTIVE and job.images.count() < len(PLATFORM_IDS)

    stack.worker()
    job = wait_for_job(job_id, lambda job: job.is_finished, timeout=120, what="the job to finish")
    assert_one_set_of_images(job, PLATFORM_IDS)
    assert job.stalled_count == 1
    assert job.attempts_made == 2
    outputs = [
        path for path in media_files(media_root) if path.relative_to(media_root).parts[0] != "tmp"
    ]
    assert len(outputs) == len(PLATFORM_IDS)


@pytest.mark.slow
def test_a_job_whose_worker_keeps_dying_fails_after_two_re_runs(stack: Stack) -> None:
    stack.web()
    stack.maintenance()
    job_id = stack.submit()
    for attempt in (1, 2, 3):
        worker = stack.worker(**SLOW_STEPS)
        wait_for_job(
            job_id,
            lambda job, n=attempt: job.status == JobStatus.ACTIVE and job.attempts_made == n,
            timeout=60,
            what=f"attempt {attempt} to start",
        )
        sigkill(worker)
    job = wait_for_job(job_id, lambda job: job.is_finished, timeout=60, what="the job to fail")
    assert job.status == JobStatus.FAILED
    assert job.failed_reason.startswith("Job stalled 3 times"), job.failed_reason
    assert job.stalled_count == 2
    assert job.generation_calls <= 3


@pytest.mark.slow
def test_two_deliveries_of_the_same_message_at_once_make_one_set_of_images(stack: Stack) -> None:
    from jobs.services.delivery import job_send_message

    stack.web()
    first, second = stack.worker(), stack.worker()
    job = Job.objects.create(
        owner=make_user("carol"),
        kind="image-generation",
        prompt="Twins",
        platforms=["twitter-post", "instagram-post"],
        enqueued_at=timezone.now(),
    )
    for _ in range(2):
        assert job_send_message(job_id=str(job.id), kind=job.kind, priority=0)

    job = wait_for_job(str(job.id), lambda job: job.is_finished, timeout=60, what="the job")
    assert_one_set_of_images(job, ["twitter-post", "instagram-post"])
    assert job.attempts_made == 1
    # The other delivery ends as a no-op (at once, or after checking back once the job is done).
    wait_until(
        lambda: f"job {job.id}: nothing to do" in first.output() + second.output(),
        timeout=30,
        what="the duplicate delivery to end",
    )
    job.refresh_from_db()
    assert job.attempts_made == 1 and job.generation_calls == 1


@pytest.mark.slow
def test_a_pool_process_killed_mid_job_is_redelivered_and_completes_without_the_sweeper(
    stack: Stack,
) -> None:
    """The OOM killer takes the pool process, not the worker: Celery gives the message back
    (reject_on_worker_lost), the redelivery finds the job held by a dead attempt, checks
    back when its lease ends and takes it over. No beat runs here. (Celery notices the dead
    pool process a few seconds late, so the lease is longer than that here.)"""
    stack.web()
    worker = stack.worker(JOB_LEASE_SECONDS="12", **SLOW_STEPS)
    job_id = stack.submit()
    wait_for_job(job_id, lambda job: bool(job.source_path), timeout=60, what="the generation step")
    (pool,) = pool_processes(worker)
    os.kill(pool, signal.SIGKILL)

    job = wait_for_job(job_id, lambda job: job.is_finished, timeout=90, what="the job to finish")
    assert_one_set_of_images(job, PLATFORM_IDS)
    assert job.stalled_count == 1
    assert "checking back in" in worker.output()


# --- The broker loses its data or goes away ---------------------------------------------------


@pytest.mark.slow
def test_jobs_waiting_when_the_broker_is_flushed_all_complete(
    stack: Stack, broker: RedisServer
) -> None:
    stack.web()
    job_ids = [stack.submit(prompt=f"Flushed {n}", platforms=["twitter-post"]) for n in range(5)]
    assert broker.queued() == 5
    broker.client().flushdb()

    stack.maintenance()
    stack.worker()
    wait_all_finished(job_ids, timeout=120)
    for job in Job.objects.filter(pk__in=job_ids):
        assert_one_set_of_images(job, ["twitter-post"])


@pytest.mark.slow
def test_a_job_submitted_while_the_broker_is_down_answers_202_quickly_and_runs_when_it_returns(
    stack: Stack, broker: RedisServer
) -> None:
    stack.web()
    stack.maintenance()
    stack.worker()
    broker.stop()

    started = time.monotonic()
    job_id = stack.submit(platforms=["twitter-post"])
    elapsed = time.monotonic() - started
    print(f"\nsubmit with the broker down answered 202 in {elapsed:.2f}s")
    assert elapsed < 2, f"submit took {elapsed:.2f}s with the broker down"
    assert Job.objects.get(pk=job_id).status == JobStatus.WAITING

    time.sleep(3)  # the job is overdue before the broker returns, empty
    broker.start()
    job = wait_for_job(
        job_id, lambda job: job.is_finished, timeout=120, what="the job after the broker returned"
    )
    assert_one_set_of_images(job, ["twitter-post"])


def test_the_sweeper_resends_only_the_messages_missing_from_the_broker(
    transactional_db: None, broker: RedisServer, settings: Any
) -> None:
    from jobs.services.submission import job_create_generation
    from jobs.services.sweeper import jobs_sweep

    settings.JOB_ENQUEUE_OVERDUE_SECONDS = 60
    alice = make_user("alice")
    job_ids = [
        str(
            job_create_generation(
                actor=alice, prompt=f"Backlog {n}", platforms=["twitter-post"]
            ).job.id
        )
        for n in range(20)
    ]
    assert broker.queued() == 20
    Job.objects.update(enqueued_at=timezone.now() - timedelta(minutes=5))

    # A long backlog: every overdue job still has its message; nothing is doubled.
    assert jobs_sweep()["resent"] == 0
    assert broker.queued() == 20

    # Part of the queue lost (a restore from an old snapshot): exactly the missing ones.
    client = broker.client()
    # A message's task id is `<job id>.<delivery>` (jobs.services.delivery).
    lost = {
        __import__("json").loads(client.rpop("images:9"))["headers"]["id"].partition(".")[0]
        for _ in range(5)
    }
    Job.objects.update(enqueued_at=timezone.now() - timedelta(minutes=5))
    assert jobs_sweep()["resent"] == 5
    assert broker.queued() == 20
    assert lost <= set(job_ids)

    # The whole broker lost.
    client.flushdb()
    Job.objects.update(enqueued_at=timezone.now() - timedelta(minutes=5))
    assert jobs_sweep()["resent"] == 20
    assert broker.queued() == 20


def test_submitting_while_the_database_is_down_answers_503_with_a_clear_message(
    start_web: Any, broker: RedisServer
) -> None:
    from tests.conftest import free_port

    dead = f"postgres://postgres@127.0.0.1:{free_port()}/snapasset"
    base = start_web(env={"DATABASE_URL": dead, "REDIS_URL": broker.url})
    started = time.monotonic()
    response = httpx.post(
        f"{base}/api/jobs/generate", json={"prompt": "Nobody home"},
        headers={"Authorization": "Token 0123456789abcdef"}, timeout=30,
    )  # fmt: skip
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "error": "The database is unavailable; nothing was saved, try again shortly"
    }


# --- Cancellation ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cancelling_a_waiting_job_means_it_never_starts(stack: Stack, broker: RedisServer) -> None:
    stack.web()
    job_id = stack.submit()
    response = httpx.delete(f"{stack.base}/api/jobs/{job_id}", headers=stack.headers, timeout=10)
    assert response.status_code == 200, response.text
    assert broker.queued() == 1  # revoking is an optimisation; the message may stay

    worker = stack.worker()
    time.sleep(0.5)
    from jobs.services.delivery import job_send_message

    job_send_message(job_id=job_id, kind="image-generation", priority=0)  # and again, late
    time.sleep(3)
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.CANCELLED
    assert job.attempts_made == 0 and job.generation_calls == 0
    assert not job.images.exists()
    assert "calling the image provider" not in worker.output()


def test_cancelling_an_active_job_stops_it_before_the_next_step_and_removes_its_outputs(
    stack: Stack, media_root: Path
) -> None:
    stack.web()
    worker = stack.worker(**SLOW_STEPS)
    job_id = stack.submit()
    wait_for_job(job_id, lambda job: job.images.exists(), timeout=60, what="a first platform image")

    response = httpx.delete(f"{stack.base}/api/jobs/{job_id}", headers=stack.headers, timeout=10)
    assert response.status_code == 200
    assert Job.objects.get(pk=job_id).status == JobStatus.CANCELLED
    wait_until(
        lambda: "cancelled; partial outputs removed" in worker.output(),
        timeout=60,
        what="the pipeline to stop",
    )
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.CANCELLED
    assert job.images.count() == 0
    assert job.generation_calls == 1
    assert job.source_path == ""
    assert media_files(media_root) == []
    assert job.progress < 100


# --- Graceful shutdown ----------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_lets_the_running_step_finish_then_requeues_the_job(stack: Stack) -> None:
    stack.web()
    worker = stack.worker(JOB_SHUTDOWN_GRACE_SECONDS="60", **SLOW_STEPS)
    job_id = stack.submit()
    wait_for_job(job_id, lambda job: job.images.exists(), timeout=60, what="a first platform image")

    sigterm_main(worker)
    worker.proc.wait(timeout=60)
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.WAITING, job.status
    assert job.claim_token is None
    done = job.images.count()
    assert 1 <= done < len(PLATFORM_IDS)
    assert "released to the queue: the worker is shutting down" in worker.output()

    stack.worker()
    job = wait_for_job(job_id, lambda job: job.is_finished, timeout=120, what="the job to finish")
    assert_one_set_of_images(job, PLATFORM_IDS)
    assert job.attempts_made == 1  # the interrupted run is not counted as an attempt


def test_a_step_outliving_the_shutdown_grace_period_has_its_job_released_and_fenced_off(
    transactional_db: None, broker: RedisServer, settings: Any
) -> None:
    """The step itself is simulated by a sleep in this process: the heartbeat thread sees the
    grace period end, gives the job back to the queue, and the late step can write nothing."""
    from jobs import shutdown
    from jobs.services.lease import job_claim, job_heartbeat, job_set_progress
    from snapasset.core.exceptions import LeaseLost

    settings.JOB_SHUTDOWN_GRACE_SECONDS = 1
    job = Job.objects.create(
        owner=make_user("dave"), kind="image-generation", prompt="Slow", platforms=["twitter-post"]
    )
    claim = job_claim(job_id=str(job.id))
    assert claim is not None
    try:
        with job_heartbeat(claim):
            shutdown._shutdown_started_at.value = time.time()  # what SIGTERM does
            wait_for_job(
                str(job.id),
                lambda job: job.status == JobStatus.WAITING,
                timeout=5,
                what="the release",
            )
        with pytest.raises(LeaseLost):
            job_set_progress(claim, 50)
    finally:
        shutdown._shutdown_started_at.value = 0.0
    job.refresh_from_db()
    assert job.status == JobStatus.WAITING and job.claim_token is None and job.attempts_made == 0
    assert broker.queued() == 1  # its message was sent again


@pytest.mark.slow
def test_a_worker_killed_after_its_stop_timeout_leaves_no_job_active(stack: Stack) -> None:
    stack.web()
    # The kill may fall between the release's commit and its message: the sweeper covers it.
    stack.maintenance()
    worker = stack.worker(JOB_SHUTDOWN_GRACE_SECONDS="0", **SLOW_STEPS)
    job_id = stack.submit()
    wait_for_job(job_id, lambda job: job.images.exists(), timeout=60, what="a first platform image")

    sigterm_main(worker)
    wait_for_job(
        job_id,
        lambda job: job.status == JobStatus.WAITING,
        timeout=15,
        what="the job to be released",
    )
    # The orchestrator's stop timeout ends: the worker is killed; nothing is left active.
    worker.signal(signal.SIGKILL)
    worker.proc.wait(timeout=10)
    stack.worker()
    job = wait_for_job(job_id, lambda job: job.is_finished, timeout=120, what="the job to finish")
    assert_one_set_of_images(job, PLATFORM_IDS)
    assert job.stalled_count == 0


# --- Priority -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_high_priority_job_submitted_after_ten_normal_ones_starts_before_them(
    stack: Stack,
) -> None:
    stack.web()
    stack.worker(**SLOW_STEPS)
    blocker = stack.submit(prompt="Keeps the worker busy")
    wait_for_job(
        blocker, lambda job: job.status == JobStatus.ACTIVE, timeout=60, what="the blocker to start"
    )

    normal = [stack.submit(prompt=f"Normal {n}", platforms=["twitter-post"]) for n in range(10)]
    urgent = stack.submit(prompt="Urgent", platforms=["twitter-post"], priority=9)
    assert Job.objects.get(pk=blocker).status == JobStatus.ACTIVE, "the blocker ended too early"

    wait_all_finished([blocker, urgent, *normal], timeout=180)
    started = {str(job.id): job.processed_at for job in Job.objects.all()}
    assert all(started[urgent] < started[job_id] for job_id in normal)
    assert GeneratedImage.objects.filter(job_id__in=normal).count() == 10


def test_the_test_process_publishes_to_the_runs_broker_again_after_a_test_on_its_own(
    tmp_path: Path,
) -> None:
    """The fault tests point this process's Celery app at a broker of their own and back;
    afterwards an in-process submission must still reach the run's broker."""
    import redis
    from django.conf import settings

    from snapasset.celery import app

    queue = f"probe-{os.getpid()}"
    app.send_task("probe", queue=queue)  # the pools now hold the run's broker
    own = RedisServer(tmp_path / "redis")
    own.start()
    try:
        with celery_app_on(own.url):
            app.send_task("probe", queue=queue)
    finally:
        own.stop()
    app.send_task("probe", queue=queue)

    run_broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        assert run_broker.llen(queue) == 2
    finally:
        run_broker.delete(queue)
