"""Limits and hostile input: the submit rate limit and the pending-jobs cap (429 with
Retry-After), and JSON 4xx for every malformed, oversized, wrong-typed or unknown input."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from django.core.cache import cache
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from jobs.models import Job, JobStatus
from jobs.services.submission import PENDING_CAP_LOCK_MARGIN
from tests.conftest import api_key_for, client_for, make_user
from tests.factories import JobFactory

GENERATE = "/api/jobs/generate"


def submit(client: APIClient) -> Any:
    return client.post(GENERATE, {"prompt": "A fox"}, format="json")


def assert_429_shape(response: Any) -> int:
    assert response.status_code == 429
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    body = response.json()
    assert body["error"]
    assert body["retryAfter"] == retry_after
    return retry_after


@pytest.fixture
def fresh_users(db: None) -> list[Any]:
    """Users with never-seen ids: the throttle history in Redis is keyed by user id."""
    return [make_user(f"u-{uuid.uuid4().hex[:12]}") for _ in range(2)]


# --- Submit rate limit ----------------------------------------------------------------------


def test_submissions_over_the_rate_answer_429_with_retry_after(
    fresh_users: list[Any], settings: Any
) -> None:
    settings.SUBMIT_RATE = "2/min"
    client = client_for(fresh_users[0])
    assert [submit(client).status_code for _ in range(2)] == [202, 202]
    retry_after = assert_429_shape(submit(client))
    assert retry_after <= 60
    assert Job.objects.count() == 2


def test_the_rate_limit_is_per_user(fresh_users: list[Any], settings: Any) -> None:
    settings.SUBMIT_RATE = "1/min"
    first, second = (client_for(user) for user in fresh_users)
    assert submit(first).status_code == 202
    assert submit(first).status_code == 429
    assert submit(second).status_code == 202


def test_the_rate_limit_only_counts_submissions(fresh_users: list[Any], settings: Any) -> None:
    settings.SUBMIT_RATE = "1/min"
    client = client_for(fresh_users[0])
    for _ in range(3):
        assert client.get("/api/jobs").status_code == 200
    assert submit(client).status_code == 202


def test_retries_count_against_the_submit_rate(fresh_users: list[Any], settings: Any) -> None:
    settings.SUBMIT_RATE = "3/min"
    user = fresh_users[0]
    client = client_for(user)
    failed = JobFactory.create_batch(3, owner=user, status=JobStatus.FAILED)
    assert submit(client).status_code == 202
    assert client.post(f"/api/jobs/{failed[0].pk}/retry").status_code == 200
    assert client.post(f"/api/jobs/{failed[1].pk}/retry").status_code == 200
    assert_429_shape(client.post(f"/api/jobs/{failed[2].pk}/retry"))
    assert_429_shape(submit(client))
    failed[2].refresh_from_db()
    assert failed[2].status == JobStatus.FAILED


def test_the_rate_limit_history_is_kept_in_redis(fresh_users: list[Any], settings: Any) -> None:
    """A list of the submissions' timestamps, newest first, that expires a period after the
    last (snapasset/core/throttling.py)."""
    settings.SUBMIT_RATE = "5/min"
    user = fresh_users[0]
    before = time.time()
    submit(client_for(user))
    redis = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    key = cache.make_key(f"throttle:submit:{user.pk}")
    [stamp] = redis.lrange(key, 0, -1)
    assert before <= float(stamp) <= time.time()
    assert 0 < redis.ttl(key) <= 60
    submit(client_for(user))
    assert redis.llen(key) == 2


def test_submit_rate_off_disables_the_limit(fresh_users: list[Any], settings: Any) -> None:
    settings.SUBMIT_RATE = None
    client = client_for(fresh_users[0])
    assert {submit(client).status_code for _ in range(5)} == {202}


@pytest.mark.e2e
def test_the_rate_limit_holds_across_web_processes(start_web: Any) -> None:
    user = make_user(f"u-{uuid.uuid4().hex[:12]}")
    headers = {"Authorization": f"Token {api_key_for(user)}"}
    env = {"SUBMIT_RATE": "2/min"}
    first, second = start_web(env=env), start_web(env=env)

    def post(base: str) -> httpx.Response:
        return httpx.post(
            f"{base}{GENERATE}", json={"prompt": "A fox"}, headers=headers, timeout=30
        )

    assert post(first).status_code == 202
    assert post(second).status_code == 202
    assert_429_shape(post(first))
    assert_429_shape(post(second))


# --- Pending cap --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", [JobStatus.WAITING, JobStatus.ACTIVE, JobStatus.DELAYED])
def test_a_user_at_the_pending_cap_gets_429_with_retry_after(
    alice: Any, settings: Any, status: str
) -> None:
    settings.JOB_MAX_PENDING_PER_USER = 2
    JobFactory.create_batch(2, owner=alice, status=status)
    response = submit(client_for(alice))
    assert_429_shape(response)
    assert "limit 2" in response.json()["error"]
    assert Job.objects.count() == 2


def submit_statements(client: APIClient) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        assert submit(client).status_code == 202
    return [query["sql"] for query in queries.captured_queries]


@pytest.mark.django_db
def test_far_from_the_cap_a_submit_takes_no_lock_and_near_it_counts_under_the_owners_lock(
    alice: Any, settings: Any
) -> None:
    settings.JOB_MAX_PENDING_PER_USER = PENDING_CAP_LOCK_MARGIN + 1
    client = client_for(alice)
    far = submit_statements(client)
    assert not [sql for sql in far if "FOR UPDATE" in sql]
    assert sum(sql.startswith("INSERT") for sql in far) == 1
    # One pending job now; within the margin of the cap from here on.
    near = submit_statements(client)
    assert [sql for sql in near if "FOR UPDATE" in sql]
    assert Job.objects.filter(owner=alice).count() == 2


@pytest.mark.django_db
def test_a_plain_submit_is_two_statements_the_key_and_an_insert_that_counts(alice: Any) -> None:
    """The INSERT admits the job only when the owner is far from the pending-jobs cap and
    has no daily quota of their own (one statement, no lock)."""
    lookup, insert = submit_statements(client_for(alice))
    assert lookup.startswith("SELECT") and "knox_authtoken" in lookup
    assert insert.startswith("INSERT") and "COUNT(*)" in insert and "spend_userquota" in insert
    assert Job.objects.filter(owner=alice, status=JobStatus.WAITING).count() == 1


@pytest.mark.django_db
def test_at_the_cap_a_submit_inserts_nothing_whatever_the_margin(alice: Any, settings: Any) -> None:
    settings.JOB_MAX_PENDING_PER_USER = 1
    client = client_for(alice)
    assert submit(client).status_code == 202
    assert_429_shape(submit(client))
    Job.objects.filter(owner=alice).update(status=JobStatus.COMPLETED)
    assert submit(client).status_code == 202
    assert Job.objects.filter(owner=alice).count() == 2


@pytest.mark.parametrize("cap", [3, PENDING_CAP_LOCK_MARGIN + 4])
def test_concurrent_submits_of_one_user_never_pass_the_cap(
    transactional_db: None, settings: Any, cap: int
) -> None:
    """Three short of the cap, six submits at once: within PENDING_CAP_LOCK_MARGIN of it
    (a cap below the margin, or above it with its pending jobs) the conditional INSERT
    inserts nothing and each submit counts under the owner's row lock: exactly three pass."""
    settings.JOB_MAX_PENDING_PER_USER = cap
    settings.SUBMIT_RATE = None
    alice = make_user("alice")
    JobFactory.create_batch(cap - 3, owner=alice, status=JobStatus.WAITING)
    clients = [client_for(alice) for _ in range(6)]
    for client in clients:  # each loads its middleware (metrics) before the race
        assert client.get("/api/platforms").status_code == 200
    start = threading.Barrier(len(clients))
    statuses: list[int] = []

    def send(client: APIClient) -> None:
        start.wait()
        try:
            statuses.append(submit(client).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [202, 202, 202, 429, 429, 429]
    assert Job.objects.filter(owner=alice).count() == cap


@pytest.mark.django_db
def test_finished_jobs_do_not_count_towards_the_cap(alice: Any, bob: Any, settings: Any) -> None:
    settings.JOB_MAX_PENDING_PER_USER = 1
    JobFactory(owner=alice, status=JobStatus.COMPLETED)
    JobFactory(owner=alice, status=JobStatus.FAILED)
    JobFactory(owner=bob, status=JobStatus.WAITING)
    assert submit(client_for(alice)).status_code == 202
    assert submit(client_for(alice)).status_code == 429


# --- Hostile input ----------------------------------------------------------------------------

JOB = "00000000-0000-0000-0000-000000000000"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, path, body, content_type, expected",
    [
        ("post", GENERATE, b"[" * 50_000 + b"]" * 50_000, "application/json", 400),
        ("post", GENERATE, b'{"prompt": "\\ud800"}', "application/json", 400),
        ("post", GENERATE, b'{"prompt": "a\\u0000b"}', "application/json", 400),
        ("post", GENERATE, b'{"prompt": NaN}', "application/json", 400),
        ("post", GENERATE, b'{"prompt": "ok", "priority": 1e999}', "application/json", 400),
        (
            "post",
            GENERATE,
            b'{"prompt": "ok", "priority": ' + b"9" * 5000 + b"}",
            "application/json",
            400,
        ),
        ("post", GENERATE, b'{"prompt": {"$gt": ""}}', "application/json", 400),
        ("post", GENERATE, b'{"prompt": "ok", "userId": ["alice"]}', "application/json", 400),
        ("post", GENERATE, b"\xff\xfe\x00garbage", "application/json", 400),
        ("post", GENERATE, b"prompt=A+fox", "application/x-www-form-urlencoded", 415),
        ("post", GENERATE, b"<prompt>A fox</prompt>", "application/xml", 415),
        (
            "post",
            "/api/jobs/cleanup",
            b'{"type": "all", "olderThanDays": 1e3}',
            "application/json",
            400,
        ),
        ("post", "/api/jobs/cleanup", b"{", "application/json", 400),
        ("post", f"/api/jobs/{JOB}/retry", b"{", "application/json", 404),
        ("get", "/api/jobs?offset=99999999999999999999999", None, None, 400),
        ("get", "/api/jobs?limit=-5", None, None, 400),
        ("get", "/api/jobs?kind=everything", None, None, 400),
        ("get", "/api/jobs?status=", None, None, 400),
        ("get", "/api/jobs?" + "&".join(f"f{i}=1" for i in range(1500)), None, None, 400),
        ("get", "/api/jobs/..%2F..%2Fetc%2Fpasswd", None, None, 404),
        ("get", "/api/jobs/%00", None, None, 404),
        ("get", "/api/jobs/" + "a" * 5000, None, None, 404),
        ("put", GENERATE, b"{}", "application/json", 405),
        ("patch", f"/api/jobs/{JOB}", b"{}", "application/json", 405),
    ],
)
def test_hostile_input_answers_json_4xx(
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    expected: int,
    settings: Any,
) -> None:
    settings.SUBMIT_RATE = None
    client = client_for(make_user("mallory", staff=True))
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs = {"data": body, "content_type": content_type}
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == expected, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    payload = response.json()
    assert payload["error"]
    assert "Traceback" not in response.content.decode(errors="replace")
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_bad_host_header_answers_json_400(alice: Any, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["snapasset.example"]
    response = client_for(alice).get("/api/jobs", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json() == {"error": "Bad request"}


@pytest.mark.django_db
def test_an_invalid_content_length_answers_json_400(alice: Any) -> None:
    response = client_for(alice).post(
        GENERATE, b"{}", content_type="application/json", CONTENT_LENGTH="abc"
    )
    assert response.status_code == 400
    assert response.json()["error"]


# Bodies over 1 MiB: tests/core/test_body_limit.py (a real uvicorn: the limit is ASGI's).


@pytest.mark.django_db
def test_an_idempotency_key_over_255_characters_is_400(alice: Any) -> None:
    response = client_for(alice).post(
        GENERATE, {"prompt": "A fox"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["details"]


def test_submissions_still_work_when_the_throttle_cache_is_down(
    fresh_users: list[Any], settings: Any
) -> None:
    from tests.conftest import free_port

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    settings.SUBMIT_RATE = "1/min"
    client = client_for(fresh_users[0])
    # Fails open (logged): the pending cap in the database still bounds a user.
    assert [submit(client).status_code for _ in range(2)] == [202, 202]


@pytest.mark.django_db
def test_retrying_old_failures_cannot_go_past_the_pending_cap(
    alice: Any, staff_client: APIClient, settings: Any
) -> None:
    settings.JOB_MAX_PENDING_PER_USER = 1
    JobFactory(owner=alice, status=JobStatus.WAITING)
    failed = JobFactory(owner=alice, status=JobStatus.FAILED)
    assert_429_shape(client_for(alice).post(f"/api/jobs/{failed.pk}/retry"))
    failed.refresh_from_db()
    assert failed.status == JobStatus.FAILED
    # Staff are not held to a user's cap.
    assert staff_client.post(f"/api/jobs/{failed.pk}/retry").status_code == 200
