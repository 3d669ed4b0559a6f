"""POST /api/jobs/generate/batch: up to 100 submissions in one request and one transaction.

Each item is answered as POST /api/jobs/generate would answer its body alone (202 and the
job, or the same error JSON and status); the valid items are queued whatever the others
hold. The submit rate, the pending-jobs cap and the daily quota hold for the batch as a
whole: over any of them, the whole batch is a 429 and nothing is queued."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import Job, JobStatus
from jobs.platforms import PLATFORM_IDS
from jobs.services.delivery import celery_priority
from jobs.webhooks.models import JobCallback
from tests.conftest import api_key_for, client_for, make_user, wait_until
from tests.factories import JobFactory
from tests.jobs.faults import RedisServer
from tests.jobs.webhooks.receiver import running_receiver

GENERATE = "/api/jobs/generate"
BATCH = "/api/jobs/generate/batch"


def submit_batch(client: APIClient, items: Any, **headers: str) -> Any:
    return client.post(BATCH, items, format="json", **headers)


def fox(n: int, **fields: Any) -> dict[str, Any]:
    return {"prompt": f"A red fox, take {n}", "platforms": ["twitter-post"], **fields}


@pytest.fixture
def fresh_user(db: None) -> Any:
    """A user with a never-seen id: the submit rate's history in Redis is keyed by user id."""
    return make_user(f"u-{uuid.uuid4().hex[:12]}")


def assert_429_shape(response: Any) -> dict[str, Any]:
    assert response.status_code == 429, response.content
    retry_after = int(response.headers["Retry-After"])
    body = response.json()
    assert retry_after >= 1 and body["retryAfter"] == retry_after and body["error"]
    return dict(body)


# --- Valid batches ------------------------------------------------------------------------------


def test_a_batch_of_valid_bodies_queues_every_job_in_order(
    alice_client: APIClient, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    items = [
        fox(0),
        {"prompt": "  A lighthouse  ", "imageType": "natural", "format": "webp", "priority": 9},
        fox(2, platforms=["instagram-post", "twitter-post"], format="jpeg", priority=3),
    ]
    with django_capture_on_commit_callbacks() as sent:
        response = submit_batch(alice_client, items)

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 0)
    assert [(r["index"], r["status"]) for r in body["results"]] == [(0, 202), (1, 202), (2, 202)]
    for result in body["results"]:
        assert set(result) == {"index", "status", "job"}
        assert set(result["job"]) == {"jobId", "generationId", "status", "message", "estimatedTime"}
        assert result["job"]["status"] == "queued"
    jobs = [Job.objects.get(pk=r["job"]["jobId"]) for r in body["results"]]
    assert all(job.owner == alice and job.status == JobStatus.WAITING for job in jobs)
    assert [str(job.generation_id) for job in jobs] == [
        r["job"]["generationId"] for r in body["results"]
    ]
    assert [(j.prompt, j.platforms, j.image_type, j.output_format, j.priority) for j in jobs] == [
        ("A red fox, take 0", ["twitter-post"], "vivid", "png", 0),
        ("A lighthouse", list(PLATFORM_IDS), "natural", "webp", 9),
        ("A red fox, take 2", ["instagram-post", "twitter-post"], "vivid", "jpeg", 3),
    ]
    # After the commit: each job's message (and the stats nudges), as a single submit sends.
    assert len(sent) >= 3


def test_each_job_gets_its_own_message_with_its_priority_and_the_request_id(
    transactional_db: None, broker: RedisServer
) -> None:
    client = client_for(make_user("alice"))
    items = [fox(n, priority=priority) for n, priority in enumerate([0, 5, 9])]
    response = submit_batch(client, items, HTTP_X_REQUEST_ID="batch-req-0001")
    assert response.status_code == 200, response.content
    assert response["X-Request-ID"] == "batch-req-0001"

    assert broker.queued() == 3
    redis = broker.client()
    messages = {
        key.decode(): [json.loads(raw) for raw in redis.lrange(key, 0, -1)]
        for key in redis.keys("images*")
    }
    by_job = {
        message["headers"]["id"].partition(".")[0]: (key, message)
        for key, queued in messages.items()
        for message in queued
    }
    job_ids = [r["job"]["jobId"] for r in response.json()["results"]]
    assert set(by_job) == set(job_ids)
    for job_id, priority in zip(job_ids, [0, 5, 9], strict=True):
        key, message = by_job[job_id]
        assert message["properties"]["priority"] == celery_priority(priority)
        assert message["headers"]["request_id"] == "batch-req-0001"


def test_with_the_broker_down_a_batch_answers_at_once_and_the_sweeper_sends_its_jobs_later(
    transactional_db: None, broker: RedisServer, settings: Any
) -> None:
    from jobs.services.sweeper import jobs_sweep
    from snapasset.core.redis_clients import forget_outages

    settings.JOB_ENQUEUE_OVERDUE_SECONDS = 60
    client = client_for(make_user("alice"))
    broker.stop()
    started = time.monotonic()
    response = submit_batch(client, [fox(n) for n in range(10)])
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["accepted"] == 10
    assert elapsed < 3, f"a batch took {elapsed:.2f}s with the broker down"
    assert Job.objects.filter(status=JobStatus.WAITING).count() == 10

    broker.start()
    forget_outages()
    assert jobs_sweep()["resent"] == 0  # not overdue yet
    Job.objects.update(enqueued_at=timezone.now() - timedelta(minutes=5))
    assert jobs_sweep()["resent"] == 10
    assert broker.queued() == 10


# --- Invalid items ------------------------------------------------------------------------------


def test_invalid_items_get_the_single_endpoints_error_and_do_not_stop_the_valid_ones(
    alice_client: APIClient, alice: Any, bob: Any, settings: Any
) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = []
    invalid = {
        1: {"platforms": ["twitter-post"]},  # no prompt
        2: fox(2, platforms=["myspace-banner"]),
        3: "A fox, but not an object",
        4: fox(4, userId=bob.username),  # another user's id: 403
        5: fox(5, callbackUrl="https://10.0.0.7/hook"),  # a private address
        6: fox(6, colour="red"),  # an unknown field
        8: fox(8, priority="9"),  # the wrong type
    }
    items = [invalid.get(n, fox(n)) for n in range(10)]
    response = submit_batch(alice_client, items)

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 7)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(10))
    assert [r["status"] for r in results] == [202, 400, 400, 400, 403, 400, 400, 202, 400, 202]
    queued = [Job.objects.get(pk=r["job"]["jobId"]) for r in results if r["status"] == 202]
    assert [job.prompt for job in queued] == [f"A red fox, take {n}" for n in (0, 7, 9)]
    assert Job.objects.count() == 3 and not JobCallback.objects.exists()
    # Each refused item is answered exactly as the single endpoint answers its body.
    for index, item in invalid.items():
        single = alice_client.post(GENERATE, item, format="json")
        assert results[index] == {
            "index": index,
            "status": single.status_code,
            "error": single.json(),
        }
    assert "prompt" in results[1]["error"]["details"]
    assert "callbackUrl" in results[5]["error"]["details"]
    assert Job.objects.count() == 3


def test_a_batch_with_no_valid_item_answers_200_and_queues_nothing(
    alice_client: APIClient,
) -> None:
    response = submit_batch(alice_client, [{"prompt": ""}, {"prompt": 7}])
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (0, 2)
    assert [r["status"] for r in body["results"]] == [400, 400]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"[]", "empty"),
        (json.dumps([fox(n) for n in range(101)]).encode(), "at most 100 jobs; this one has 101"),
        (json.dumps(fox(0)).encode(), "not an object"),
        (b'"A red fox"', "not a string"),
        (b"42", "not a number"),
        (b"null", "not null"),
    ],
)
def test_a_body_that_is_not_a_list_of_1_to_100_items_is_a_400_naming_the_problem(
    alice_client: APIClient, raw: bytes, says: str
) -> None:
    response = alice_client.post(BATCH, raw, content_type="application/json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "Invalid batch"
    assert says in body["details"]["batch"][0]
    assert not Job.objects.exists()


def test_malformed_json_is_a_400_and_a_non_json_body_a_415(alice_client: APIClient) -> None:
    malformed = alice_client.post(BATCH, b"[{", content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["error"]
    form = alice_client.post(BATCH, "prompt=fox", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415 and form.json()["error"]


def test_an_idempotency_key_is_refused_on_a_batch(alice_client: APIClient) -> None:
    response = submit_batch(alice_client, [fox(0)], HTTP_IDEMPOTENCY_KEY="batch-1")
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["details"]
    assert not Job.objects.exists()


def longest_items(words: str, count: int = 100) -> list[dict[str, Any]]:
    """``count`` items with every field set and prompts of about 4000 characters."""
    return [
        {
            "prompt": f"{n:03d} " + words * ((3990 - 4) // len(words)),
            "platforms": list(PLATFORM_IDS),
            "imageType": "natural",
            "format": "webp",
            "priority": 9,
        }
        for n in range(count)
    ]


@pytest.mark.e2e
def test_100_items_of_the_longest_english_prompts_fit_in_the_body_limit(start_web: Any) -> None:
    base = start_web(env={"JOB_MAX_PENDING_PER_USER": "100", "SUBMIT_RATE": "off"})
    headers = {"Authorization": f"Token {api_key_for(make_user('alice'))}"}
    raw = json.dumps(longest_items("a watercolour fox in a snowy birch forest at dusk, ")).encode()
    assert 400_000 < len(raw) < 1024 * 1024
    response = httpx.post(
        f"{base}{BATCH}",
        content=raw,
        headers={**headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:500]
    assert response.json()["accepted"] == 100
    assert Job.objects.count() == 100

    # 4000 CJK characters a prompt: 1.2 MB in UTF-8, over 1 MiB. Refused before it is read.
    too_big = json.dumps(longest_items("雪の白樺林の狐、"), ensure_ascii=False).encode()
    assert len(too_big) > 1024 * 1024
    response = httpx.post(
        f"{base}{BATCH}",
        content=too_big,
        headers={**headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413 and response.json()["limit"] == 1024 * 1024
    assert Job.objects.count() == 100


# --- The limits hold for the batch as a whole ---------------------------------------------------


def test_a_batch_over_the_pending_cap_is_refused_whole(alice: Any, settings: Any) -> None:
    settings.JOB_MAX_PENDING_PER_USER = 5
    client = client_for(alice)
    JobFactory.create_batch(3, owner=alice, status=JobStatus.WAITING)
    JobFactory(owner=alice, status=JobStatus.COMPLETED)  # finished jobs do not count

    refused = submit_batch(client, [fox(n) for n in range(3)])
    body = assert_429_shape(refused)
    assert "3 jobs waiting or running and this batch adds 3 (limit 5)" in body["error"]
    assert Job.objects.filter(owner=alice).count() == 4

    # Invalid items are not jobs: they do not count.
    fits = submit_batch(client, [fox(0), {"prompt": ""}, fox(1), {"prompt": ""}])
    assert fits.status_code == 200 and fits.json()["accepted"] == 2
    assert assert_429_shape(client.post(GENERATE, fox(9), format="json"))


def test_concurrent_batches_of_one_user_cannot_pass_the_cap_together(
    transactional_db: None, settings: Any
) -> None:
    settings.JOB_MAX_PENDING_PER_USER = 5
    settings.SUBMIT_RATE = None
    alice = make_user("alice")
    clients = [client_for(alice) for _ in range(4)]
    for client in clients:  # each loads its middleware (metrics) before the race
        assert client.get("/api/platforms").status_code == 200
    start = threading.Barrier(4)
    statuses: list[int] = []

    def send(n: int) -> None:
        start.wait()
        try:
            statuses.append(submit_batch(clients[n], [fox(n), fox(n + 10)]).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Two batches of 2 fit under 5; a third would make 6: refused whole, whatever the order.
    assert sorted(statuses) == [200, 200, 429, 429]
    assert Job.objects.filter(owner=alice).count() == 4


def test_a_batch_over_the_submit_rate_is_refused_whole_and_each_item_counts(
    fresh_user: Any, settings: Any
) -> None:
    settings.SUBMIT_RATE = "5/min"
    client = client_for(fresh_user)
    assert submit_batch(client, [fox(n) for n in range(3)]).status_code == 200

    body = assert_429_shape(submit_batch(client, [fox(n) for n in range(3)]))
    single_refusal = "Too many job submissions; slow down"
    assert body["error"] == single_refusal and body["retryAfter"] <= 60
    assert Job.objects.count() == 3

    assert submit_batch(client, [fox(3), fox(4)]).status_code == 200  # exactly the rest
    refused = client.post(GENERATE, fox(5), format="json")
    assert assert_429_shape(refused)["error"] == single_refusal
    assert Job.objects.count() == 5


def test_a_batch_larger_than_the_rate_allows_is_refused_for_a_whole_period(
    fresh_user: Any, settings: Any
) -> None:
    settings.SUBMIT_RATE = "3/min"
    body = assert_429_shape(submit_batch(client_for(fresh_user), [fox(n) for n in range(4)]))
    assert body["retryAfter"] == 60
    assert not Job.objects.exists()


def test_a_batch_over_the_daily_quota_is_refused_whole(alice: Any, settings: Any) -> None:
    settings.DAILY_GENERATION_QUOTA = 3
    client = client_for(alice)
    JobFactory(owner=alice, status=JobStatus.WAITING)  # queued: it will pay

    body = assert_429_shape(submit_batch(client, [fox(n) for n in range(3)]))
    assert (body["limit"], body["used"], body["pending"], body["requested"]) == (3, 0, 1, 3)
    assert body["resetsAt"] and "Daily quota" in body["error"]
    assert Job.objects.count() == 1

    assert submit_batch(client, [fox(0), fox(1)]).json()["accepted"] == 2
    assert assert_429_shape(client.post(GENERATE, fox(2), format="json"))["requested"] == 1
    assert Job.objects.count() == 3


# --- Credentials and ownership ------------------------------------------------------------------


def test_a_batch_needs_credentials(anon_client: APIClient, db: None) -> None:
    response = submit_batch(anon_client, [fox(0)])
    assert response.status_code in (401, 403) and response.json()["error"]
    assert not Job.objects.exists()


def test_the_jobs_of_a_batch_are_the_callers_and_only_theirs_to_see(
    alice_client: APIClient, bob_client: APIClient, alice: Any
) -> None:
    items = [fox(0), fox(1, userId=alice.username), fox(2, userId=str(alice.pk))]
    results = submit_batch(alice_client, items).json()["results"]
    assert [r["status"] for r in results] == [202, 202, 202]
    for result in results:
        job_id = result["job"]["jobId"]
        assert alice_client.get(f"/api/jobs/{job_id}").status_code == 200
        assert bob_client.get(f"/api/jobs/{job_id}").status_code == 404
    assert set(Job.objects.values_list("owner", flat=True)) == {alice.pk}


def test_staff_may_submit_a_batch_for_several_users_each_held_to_their_own_cap(
    staff_client: APIClient, staff: Any, alice: Any, bob: Any, settings: Any
) -> None:
    settings.JOB_MAX_PENDING_PER_USER = 2
    items = [
        fox(0, userId=alice.username),
        fox(1, userId=bob.username),
        fox(2, userId=alice.username),
        fox(3),
        fox(4, userId="nobody-by-that-name"),
    ]
    body = submit_batch(staff_client, items).json()
    assert [r["status"] for r in body["results"]] == [202, 202, 202, 202, 400]
    assert body["results"][4]["error"]["details"] == {"userId": ["No user 'nobody-by-that-name'."]}
    owners = [Job.objects.get(pk=r["job"]["jobId"]).owner for r in body["results"][:4]]
    assert owners == [alice, bob, alice, staff]

    # Bob has 1 of 2: one more is fine, two more are not, and the whole batch waits.
    over = submit_batch(staff_client, [fox(5, userId=bob.username)] * 2 + [fox(6)])
    assert "adds 2 (limit 2)" in assert_429_shape(over)["error"]
    assert Job.objects.count() == 4


# --- Through the real processes -----------------------------------------------------------------


@pytest.mark.e2e
def test_a_batch_runs_to_completion_in_the_worker_with_its_webhooks_and_request_id(
    start_worker: Any, start_web: Any, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    env = {
        "LOG_FORMAT": "json",
        "LOG_DIR": str(log_dir),
        "LOG_LEVEL": "info",
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    }
    alice = make_user("alice")
    headers = {"Authorization": f"Token {api_key_for(alice)}"}
    base = start_web(env=env)
    start_worker(queues="images,webhooks", concurrency=2, env=env)
    secret = httpx.get(f"{base}/api/webhooks/secret", headers=headers, timeout=10).json()["secret"]

    with running_receiver([200], secret=lambda: secret) as receiver:
        items = [
            fox(0, callbackUrl=receiver.url),
            fox(1, platforms=["instagram-post", "facebook-post"], format="jpeg", priority=9),
            {"prompt": "A heron", "platforms": ["twitter-post", "twitter-post"]},
            fox(3, imageType="natural"),
        ]
        response = httpx.post(
            f"{base}{BATCH}",
            json=items,
            headers={**headers, "X-Request-ID": "req-batch-0001"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == "req-batch-0001"
        results = response.json()["results"]
        assert [r["status"] for r in results] == [202, 202, 400, 202]
        job_ids = [r["job"]["jobId"] for r in results if r["status"] == 202]

        def all_finished() -> bool:
            return Job.objects.filter(pk__in=job_ids, status=JobStatus.COMPLETED).count() == 3

        wait_until(all_finished, timeout=120, interval=0.5, what="the batch's jobs to complete")
        wait_until(lambda: receiver.requests, timeout=30, what="the callback")

    for job_id, platforms in zip(
        job_ids,
        [["twitter-post"], ["instagram-post", "facebook-post"], ["twitter-post"]],
        strict=True,
    ):
        result = httpx.get(f"{base}/api/jobs/{job_id}/result", headers=headers, timeout=10)
        assert result.status_code == 200
        assert [i["platformId"] for i in result.json()["result"]["images"]] == platforms
    [callback] = receiver.requests
    assert callback.verified
    event = json.loads(callback.body)
    assert (event["type"], event["data"]["jobId"]) == ("job.completed", job_ids[0])

    def lines() -> list[dict[str, Any]]:
        text = (log_dir / "combined.log").read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    for job_id in job_ids:
        of_job = wait_until(
            lambda job_id=job_id: [line for line in lines() if line.get("job_id") == job_id],
            timeout=20,
            what="the job's log lines",
        )
        assert {line.get("request_id") for line in of_job} == {"req-batch-0001"}
