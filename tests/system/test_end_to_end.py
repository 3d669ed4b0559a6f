"""End to end through the real entry points: HTTP to uvicorn, a Celery worker process, files.

Once on the full stack (Postgres + Redis of this machine) and once on the embedded default
that `make run` uses (SQLite + the embedded Redis, started by the same Procfile).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from jobs.platforms import PLATFORMS
from tests.conftest import ROOT, ManagedProcess, free_port, make_user, wait_until

pytestmark = pytest.mark.e2e


def poll_until_finished(
    base: str, headers: dict[str, str], job_id: str, timeout: float = 90
) -> dict[str, Any]:
    seen: list[int] = []

    def finished() -> dict[str, Any] | None:
        body = httpx.get(f"{base}/api/jobs/{job_id}", headers=headers, timeout=10).json()
        seen.append(body["progress"])
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    body = wait_until(finished, timeout=timeout, interval=0.2, what=f"job {job_id} to finish")
    assert seen == sorted(seen), f"progress went down: {seen}"
    return body


def assert_images_downloadable(
    base: str, headers: dict[str, str], job_id: str, platforms: list[str]
) -> None:
    result = httpx.get(f"{base}/api/jobs/{job_id}/result", headers=headers, timeout=10).json()
    assert result["status"] == "completed"
    images = result["result"]["images"]
    assert [image["platformId"] for image in images] == platforms
    for image in images:
        response = httpx.get(image["url"], timeout=10)
        assert response.status_code == 200
        assert len(response.content) == image["fileSize"]
        with Image.open(io.BytesIO(response.content)) as picture:
            platform = PLATFORMS[image["platformId"]]
            assert picture.size == (platform.width, platform.height)


def test_a_job_submitted_over_http_is_done_by_a_worker_process(
    start_worker: Any, start_web: Any
) -> None:
    from tests.conftest import api_key_for

    token = api_key_for(make_user("alice"))
    headers = {"Authorization": f"Bearer {token}"}
    start_worker()
    base = start_web()

    response = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "A red fox in the snow"},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 202
    job_id = response.json()["jobId"]

    body = poll_until_finished(base, headers, job_id)
    assert body["status"] == "completed", body
    assert body["progress"] == 100
    assert body["attemptsMade"] == 1
    assert body["processedOn"] and body["finishedOn"]
    assert_images_downloadable(base, headers, job_id, list(PLATFORMS))


def test_a_cleanup_job_runs_on_its_own_queue(start_worker: Any, start_web: Any) -> None:
    from tests.conftest import api_key_for

    token = api_key_for(make_user("root", staff=True))
    headers = {"Authorization": f"Token {token}"}
    start_worker(queues="cleanup", concurrency=1)  # no images worker at all
    base = start_web()
    response = httpx.post(
        f"{base}/api/jobs/cleanup",
        json={"type": "all", "olderThanDays": 0},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 202
    body = poll_until_finished(base, headers, response.json()["jobId"])
    assert body["status"] == "completed"
    assert body["queue"] == "file-cleanup"


# --- The embedded default ----------------------------------------------------------------------


def embedded_env(var_dir: Path, web_port: int, redis_port: int) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "MEDIA_ROOT"}
    }
    env.update(
        {
            "SNAPASSET_VAR_DIR": str(var_dir),
            "WEB_PORT": str(web_port),
            "EMBEDDED_REDIS_PORT": str(redis_port),
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout


class EmbeddedDefault:
    """`make run`'s embedded default (SQLite, the embedded Redis, files on disk) in a folder
    of its own: migrated, with a token for alice; ``start`` runs Procfile.dev processes."""

    def __init__(self, tmp_path: Path) -> None:
        web_port, redis_port = free_port(), free_port()
        self.log_dir = tmp_path
        self.env = embedded_env(tmp_path / "var", web_port, redis_port)
        manage(self.env, "migrate", "--noinput")
        token = manage(self.env, "create_api_token", "alice").strip().splitlines()[-1]
        self.headers = {"Authorization": f"Token {token}"}
        self.base = f"http://127.0.0.1:{web_port}"

    def web_up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, name: str, processes: list[str]) -> ManagedProcess:
        """Start ``processes`` with honcho, as `make run` does, once the web answers."""
        argv = [sys.executable, "-m", "honcho", "-f", "Procfile.dev", "start", *processes]
        stack = ManagedProcess(name, argv, self.env, self.log_dir)
        try:
            wait_until(self.web_up, timeout=60, what=f"the embedded stack ({name})")
        except BaseException:
            stack.stop(timeout=30)
            raise
        return stack


@pytest.mark.slow
def test_the_embedded_default_runs_jobs_and_keeps_them_across_a_restart(tmp_path: Path) -> None:
    """`make run` with no environment: SQLite and the embedded Redis, no server installed.
    A job submitted while no worker runs survives a full stop and runs after the restart."""
    embedded = EmbeddedDefault(tmp_path)
    base, headers = embedded.base, embedded.headers

    # First run: web and broker only, so the job waits in the embedded Redis.
    first = embedded.start("first", ["web", "redis"])
    try:
        response = httpx.post(
            f"{base}/api/jobs/generate",
            json={
                "prompt": "Waiting out a restart",
                "platforms": ["twitter-post", "instagram-story"],
            },
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 202
        job_id = response.json()["jobId"]
        assert httpx.get(f"{base}/api/jobs/{job_id}", headers=headers).json()["status"] == "waiting"
    finally:
        first.signal(signal.SIGTERM)
        first.proc.wait(timeout=30)
    assert first.proc.poll() is not None

    # Second run: everything `make run` starts.
    second = embedded.start("second", ["web", "worker", "cleanup", "beat", "redis"])
    try:
        body = poll_until_finished(base, headers, job_id, timeout=120)
        assert body["status"] == "completed", (body, second.output()[-3000:])
        assert_images_downloadable(base, headers, job_id, ["twitter-post", "instagram-story"])
    finally:
        second.stop(timeout=30)
    # Ctrl-C / SIGTERM stops every process it started.
    assert "stopped" in second.output()
