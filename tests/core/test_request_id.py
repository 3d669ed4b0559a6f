"""The request id: taken from X-Request-ID (when sane) or made, answered in the response, on
the request's access line and on every log line of the job that the request created, in
the worker too (a Celery message header)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs.models import Job
from snapasset.core.access_log import VALID_REQUEST_ID
from tests.conftest import api_key_for, make_user, wait_until


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_sane_request_id_is_kept_and_answered(alice_client: Any) -> None:
    response = alice_client.get("/api/platforms", HTTP_X_REQUEST_ID="trace-4bf92f35.77:a_1")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "trace-4bf92f35.77:a_1"


@pytest.mark.parametrize(
    "given", ["", "has space", "a" * 129, 'quote"', "line\\nbreak", "<script>", "ünïcode"]
)
def test_an_unusable_request_id_is_replaced_by_a_new_one(anon_client: Any, given: str) -> None:
    response = anon_client.get("/health", HTTP_X_REQUEST_ID=given)
    made = response["X-Request-ID"]
    assert made != given and VALID_REQUEST_ID.fullmatch(made) and len(made) == 32
    assert anon_client.get("/health")["X-Request-ID"] != made  # one per request


def test_the_access_line_names_route_status_user_and_request_id(
    alice: Any, alice_client: Any, caplog: Any
) -> None:
    with caplog.at_level(logging.INFO, logger="snapasset.access"):
        alice_client.get("/api/jobs/0b1f7c9e-2f5a-4c1e-9d7b-1a2b3c4d5e6f")  # a 404
        alice_client.get("/nowhere", HTTP_X_REQUEST_ID="abc")
    detail, nowhere = [r for r in caplog.records if r.name == "snapasset.access"]
    assert (detail.method, detail.status, detail.user_id) == ("GET", 404, alice.pk)
    assert detail.route == "/api/jobs/<str:job_id>"  # the pattern, not the raw path
    assert detail.path == "/api/jobs/0b1f7c9e-2f5a-4c1e-9d7b-1a2b3c4d5e6f"
    assert detail.duration_ms >= 0 and len(detail.request_id) == 32
    assert (nowhere.route, nowhere.status, nowhere.user_id) == (None, 404, None)
    assert nowhere.request_id == "abc"


@pytest.mark.e2e
def test_the_request_id_reaches_every_log_line_of_the_job_it_created(
    start_worker: Any, start_web: Any, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    env = {"LOG_FORMAT": "json", "LOG_DIR": str(log_dir), "LOG_LEVEL": "info"}
    start_worker(concurrency=1, env=env)
    base = start_web(env=env)
    token = api_key_for(make_user("alice"))
    response = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "A fox with a trace id", "platforms": ["twitter-post"]},
        headers={"Authorization": f"Token {token}", "X-Request-ID": "req-fox-0001"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-ID"] == "req-fox-0001"
    job_id = response.json()["jobId"]
    wait_until(lambda: Job.objects.get(pk=job_id).status == "completed", timeout=90, what="the job")
    combined = log_dir / "combined.log"  # web and worker write the same files
    wait_until(
        lambda: any(
            line.get("job_id") == job_id and "succeeded" in line["message"]
            for line in json_lines(combined)
        ),
        timeout=20,
        what="the task's last line",
    )
    lines = json_lines(combined)

    [access] = [line for line in lines if line["logger"] == "snapasset.access"
                and line["path"] == "/api/jobs/generate"]  # fmt: skip
    assert access["request_id"] == "req-fox-0001" and access["status"] == 202
    assert access["route"] == "/api/jobs/generate" and access["method"] == "POST"
    assert access["user_id"] == Job.objects.get(pk=job_id).owner_id

    of_job = [line for line in lines if line.get("job_id") == job_id]
    assert len(of_job) >= 3  # received/started/completed/succeeded...
    assert {line.get("request_id") for line in of_job} == {"req-fox-0001"}, of_job
    assert any(line["logger"].startswith("celery") for line in of_job)
    # Lines of the worker outside that task do not carry it.
    assert not any(line.get("request_id") for line in lines if "ready" in line["message"])


@pytest.mark.e2e
def test_a_body_refused_before_django_still_gets_its_access_line_and_id(start_web: Any) -> None:
    base = start_web(env={"LOG_FORMAT": "json", "LOG_LEVEL": "info"})
    response = httpx.post(
        f"{base}/api/jobs/generate",
        content=b"x" * (1024 * 1024 + 1),
        headers={"X-Request-ID": "too-big-1", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413 and response.headers["X-Request-ID"] == "too-big-1"

    def access_line() -> dict[str, Any] | None:
        output = start_web.process(base).output().splitlines()
        lines = [json.loads(line) for line in output if line.startswith("{")]
        found = [line for line in lines if line.get("request_id") == "too-big-1"]
        return found[0] if found else None

    line = wait_until(access_line, timeout=10, what="the access line")
    assert (line["logger"], line["status"], line["method"]) == ("snapasset.access", 413, "POST")
