"""The production web server, started with the Procfile's `web` command as a platform runs it
(gunicorn over uvicorn workers, chosen on bench/server.py's figures in docs/PERFORMANCE.md),
with two processes: it serves the API from both, refuses an oversized body while reading
it, writes our one access line per request, sums both processes' Prometheus counters,
delivers live events, and stops on SIGTERM, closing open streams, within its graceful
timeout."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ManagedProcess,
    api_key_for,
    child_env,
    free_port,
    make_user,
    wait_until,
)
from tests.core.test_body_limit import LIMIT, ONE_READ_BUFFER, send_huge_body, written_bytes
from tests.ops.test_metrics import samples, value
from tests.system.test_deployment import procfile

METRICS_TOKEN = "metrics-token-for-the-web-server-test-0123456789"
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def web_processes(pid: int) -> list[int]:
    """The server's processes: the one the platform started and its children."""
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids.append(int(child))
    return pids


@pytest.fixture
def production_web(tmp_path: Path) -> Iterator[tuple[str, ManagedProcess]]:
    port = free_port()
    env = child_env(
        PORT=str(port), WEB_CONCURRENCY="2", LOG_FORMAT="json", LOG_LEVEL="info",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), METRICS_TOKEN=METRICS_TOKEN,
    )  # fmt: skip
    # As a platform runs a Procfile line: a shell expands the variables, exec's the server.
    command = procfile("Procfile")["web"]
    proc = ManagedProcess("web", ["sh", "-c", f"exec {command}"], env, tmp_path)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(proc.output())
        try:
            return httpx.get(f"{base}/health", timeout=10).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=90, what="the production web server to answer")
    wait_until(lambda: len(web_processes(proc.proc.pid)) >= 3, timeout=60, what="2 workers")
    yield base, proc
    proc.stop(timeout=60)


def json_lines(proc: ManagedProcess, logger: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in proc.output().splitlines() if x.startswith("{")]
    return [line for line in lines if line.get("logger") == logger]


def test_the_procfile_web_command_runs_gunicorn_over_uvicorn_workers() -> None:
    command = procfile("Procfile")["web"].split()
    assert command[:2] == ["gunicorn", "snapasset.asgi:application"]
    assert "uvicorn_worker.UvicornWorker" in command


def test_two_processes_serve_the_api_and_sum_their_counters(
    production_web: tuple[str, ManagedProcess], tmp_path: Path
) -> None:
    base, _ = production_web
    token = api_key_for(make_user("alice"))
    for _ in range(40):  # a new connection each: the kernel spreads them over the processes
        response = httpx.get(
            f"{base}/api/jobs", headers={"Authorization": f"Token {token}"}, timeout=10
        )
        assert response.status_code == 200
    found = samples(
        httpx.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        ).text
    )
    by_status = "django_http_responses_total_by_status_view_method_total"
    assert value(found, by_status, method="GET", status="200", view="job-list") == 40
    # Both processes served requests: each wrote its own file of counters (counter_<pid>.db).
    writers = {path.stem.rsplit("_", 1)[1] for path in (tmp_path / "metrics").glob("counter_*.db")}
    assert len(writers) >= 2


def test_one_access_line_per_request_and_no_server_access_line(
    production_web: tuple[str, ManagedProcess],
) -> None:
    base, proc = production_web
    assert httpx.get(f"{base}/health", headers={"X-Request-ID": "probe-7"}, timeout=10).is_success
    wait_until(
        lambda: [x for x in json_lines(proc, "snapasset.access") if x["request_id"] == "probe-7"],
        timeout=10, what="our access line",
    )  # fmt: skip
    [line] = [x for x in json_lines(proc, "snapasset.access") if x["request_id"] == "probe-7"]
    assert line["route"] == "/health" and line["status"] == 200
    for logger in ("uvicorn.access", "gunicorn.access"):
        assert json_lines(proc, logger) == []
    assert "probe-7" not in proc.output().replace(json.dumps(line), "")


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_huge_body_is_refused_413_while_it_is_read(
    production_web: tuple[str, ManagedProcess], framing: str
) -> None:
    base, proc = production_web
    pids = web_processes(proc.proc.pid)
    before = sum(written_bytes(pid) for pid in pids)
    outcome = send_huge_body(base, proc.proc.pid, "/api/jobs/generate", framing)
    assert outcome.status == 413, outcome.body[:300]
    assert outcome.body.startswith(b'{"error": "Request body is larger than 1024 KiB"')
    assert outcome.closed
    assert outcome.sent < LIMIT + ONE_READ_BUFFER
    # No temporary file of the body in any process: little more than the answer was written.
    assert sum(written_bytes(pid) for pid in pids) - before < 64 * 1024
    assert httpx.get(f"{base}/health", timeout=10).status_code in (200, 503)


def test_sigterm_closes_open_streams_and_stops_within_the_graceful_timeout(
    production_web: tuple[str, ManagedProcess],
) -> None:
    base, proc = production_web
    from tests.factories import JobFactory

    user = make_user("bob")
    token = api_key_for(user)
    job = JobFactory(owner=user, status="active")
    streams = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10)
        sock.sendall(
            f"GET /api/sse/jobs/{job.id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Accept: text/event-stream\r\nAuthorization: Token {token}\r\n\r\n".encode()
        )
        assert b"connected" in sock.recv(65536) + sock.recv(65536)
        streams.append(sock)
    started = time.monotonic()
    os.kill(proc.proc.pid, signal.SIGTERM)  # the platform signals the process it started
    for sock in streams:
        sock.settimeout(60)
        while sock.recv(65536):
            pass  # the server ends the stream (an EventSource reconnects elsewhere)
    code = proc.proc.wait(timeout=60)
    stopped = time.monotonic() - started
    assert code == 0, proc.output()[-3000:]
    assert stopped < 35, f"took {stopped:.1f} s"
