"""Logs: JSON lines with job_id from a real worker, files combined.log / error.log, uncaught
exceptions, secrets and long prompts kept out."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from jobs.models import Job
from snapasset.core.log_redaction import RedactSecretsFilter as RedactingFilter
from snapasset.core.logs import JobContextFilter, JobJsonFormatter, job_log_context
from tests.conftest import ROOT, api_key_for, child_env, make_user, wait_until


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.e2e
def test_a_worker_logs_json_lines_with_the_job_id_to_stdout_and_combined_log(
    start_worker: Any, start_web: Any, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    worker = start_worker(
        concurrency=1, env={"LOG_FORMAT": "json", "LOG_DIR": str(log_dir), "LOG_LEVEL": "info"}
    )
    prompt = "A very long prompt about foxes " * 20
    # Submitted over HTTP by a web process of its own, as clients do.
    token = api_key_for(make_user("alice"))
    response = httpx.post(
        f"{start_web()}/api/jobs/generate",
        json={"prompt": prompt, "platforms": ["twitter-post"]},
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    job = Job.objects.get(pk=response.json()["jobId"])
    wait_until(lambda: Job.objects.get(pk=job.pk).status == "completed", timeout=90, what="the job")
    wait_until(
        lambda: "succeeded" in (log_dir / "combined.log").read_text(),
        timeout=20,
        what="the task log line",
    )

    lines = json_lines(log_dir / "combined.log")  # every line parses as JSON
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    of_job = [line for line in lines if line.get("job_id") == str(job.id)]
    messages = " | ".join(line["message"] for line in of_job)
    assert f"job {job.id} started" in messages
    assert f"job {job.id} completed" in messages
    # Celery's own task lines carry it too.
    assert any(
        line["logger"].startswith("celery") and "succeeded" in line["message"] for line in of_job
    )
    # Every line that mentions the job while it runs is tagged with it.
    for line in lines:
        if f"job {job.id} " in line["message"]:
            assert line.get("job_id") == str(job.id), line
    assert not any(line.get("job_id") for line in lines if "ready" in line["message"])
    # Prompts are shortened in logs.
    assert prompt not in (log_dir / "combined.log").read_text()
    assert prompt[:40] in messages

    stdout_lines = [line for line in worker.output().splitlines() if line.startswith("{")]
    assert any(json.loads(line).get("job_id") == str(job.id) for line in stdout_lines)


@pytest.mark.e2e
def test_one_access_line_per_request_ours_whatever_uvicorns_access_log_flag(
    start_web: Any,
) -> None:
    quiet = start_web(env={"LOG_FORMAT": "json", "LOG_LEVEL": "info"})
    chatty = start_web(env={"LOG_FORMAT": "json", "LOG_LEVEL": "info"}, access_log=True)
    off = start_web(env={"LOG_FORMAT": "json", "LOG_LEVEL": "info", "ACCESS_LOG": "false"})
    probe = {"X-Request-ID": "probe-1"}
    for base in (quiet, chatty, off):
        assert httpx.get(f"{base}/health", headers=probe, timeout=10).status_code == 200

    def lines_of(base: str, logger: str) -> list[dict[str, Any]]:
        output = start_web.process(base).output().splitlines()
        lines = [json.loads(line) for line in output if line.startswith("{")]
        return [line for line in lines if line["logger"] == logger]

    for base in (quiet, chatty):
        wait_until(lambda b=base: lines_of(b, "snapasset.access"), timeout=10, what="a line")
        [line] = [x for x in lines_of(base, "snapasset.access") if x["request_id"] == "probe-1"]
        assert line["route"] == "/health" and line["status"] == 200 and line["method"] == "GET"
        # uvicorn's own line would say the same request a second time: it is off.
        assert lines_of(base, "uvicorn.access") == []
    assert lines_of(off, "snapasset.access") == lines_of(off, "uvicorn.access") == []


def test_uncaught_exceptions_go_to_error_log(tmp_path: Path) -> None:
    code = (
        "import django; django.setup(); import logging; logging.getLogger('x').info('fine'); "
        "raise RuntimeError('boom-uncaught')"
    )
    env = child_env(LOG_DIR=str(tmp_path), LOG_FORMAT="text")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    errors = json_lines(tmp_path / "error.log")
    assert len(errors) == 1
    assert errors[0]["level"] == "CRITICAL"
    assert "boom-uncaught" in errors[0]["exc_info"]
    combined = json_lines(tmp_path / "combined.log")
    assert [line["message"] for line in combined] == ["fine", "uncaught exception"]
    assert "boom-uncaught" in result.stdout  # and the readable line on stdout


def test_secrets_never_reach_a_log_line_and_prompts_are_truncated() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(JobContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JobJsonFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("tests.secrets")
    logger.addHandler(handler)
    try:
        with job_log_context("job-42"):
            logger.warning(
                "calling with key %s and header Bearer abcdefghijklmnop1234 via redis://:hunter2pass@host:6379/0",
                settings.SECRET_KEY,
                extra={"prompt": "x" * 500},
            )
        logger.warning("outside a job")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert settings.SECRET_KEY not in buffer.getvalue()
    assert "abcdefghijklmnop1234" not in buffer.getvalue()
    assert "hunter2pass" not in buffer.getvalue()
    assert first["job_id"] == "job-42"
    assert len(first["prompt"]) < 120
    assert "job_id" not in second
