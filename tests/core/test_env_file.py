"""One configuration path: every entry point reads the project's `.env` the same way
(snapasset/env.py, python-dotenv), the process environment winning. Tried for real in a
temporary checkout: `make run` (honcho: uvicorn, the Celery workers, beat), manage.py,
Flower and pytest, all given nothing but the `.env`, use the same database and broker."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.conftest import ROOT, free_port, wait_until
from tests.core.conftest import Checkout

pytestmark = pytest.mark.e2e


def dotenv(**values: str) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


def run_stamp() -> str:
    """The stamp `make run` checks before installing: the test runs on this run's .venv."""
    cksum = subprocess.run(
        "cksum < requirements-run.txt", shell=True, cwd=ROOT, capture_output=True, text=True
    )
    return f".venv/.installed-run-{cksum.stdout.split()[0]}"


def test_every_entry_point_reads_the_env_file_and_uses_the_same_database(
    checkout: Checkout, tmp_path: Path
) -> None:
    database = tmp_path / "from-dotenv.sqlite3"
    var_dir = tmp_path / "var-from-dotenv"
    flower_password = "flower-pass-" + secrets.token_hex(8)
    checkout.write_env(
        dotenv(
            # Production settings in the file; `make run` switches development mode on.
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            DATABASE_URL=f"sqlite:///{database}",
            REDIS_URL=settings.REDIS_URL,
            SNAPASSET_VAR_DIR=str(var_dir),
            FLOWER_BASIC_AUTH=f"ops:{flower_password}",
            WORKER_CONCURRENCY="1",
            LOG_TO_FILES="false",
            SUBMIT_RATE="37/min",
        )
    )
    (checkout.path / ".venv").symlink_to(ROOT / ".venv")

    # manage.py: the code of the checkout, the database of the `.env`.
    shell = checkout.python(
        "manage.py", "shell", "-v", "0", "-c",
        "from django.conf import settings as s; "
        "print(s.BASE_DIR, s.DATABASES['default']['NAME'], s.DEBUG, s.SUBMIT_RATE)",
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.split() == [str(checkout.path), str(database), "False", "37/min"]
    migrate = checkout.python("manage.py", "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr
    assert database.exists()
    token = checkout.python("manage.py", "create_api_token", "alice")
    assert token.returncode == 0, token.stderr
    headers = {"Authorization": f"Token {token.stdout.strip().splitlines()[-1]}"}

    # pytest: pytest-django loads the same settings from the same file.
    (checkout.path / "probe_test.py").write_text(
        "from django.conf import settings\n\n\n"
        "def test_probe():\n"
        "    print('DATABASE', settings.DATABASES['default']['NAME'])\n"
    )
    probe = checkout.python("-m", "pytest", "-q", "-s", "probe_test.py")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert f"DATABASE {database}" in probe.stdout

    # `make run`: honcho's web, workers and beat, given nothing but the `.env` (REDIS_URL set
    # there, so no embedded Redis).
    port = free_port()
    stack = checkout.start(
        "make-run", ["make", "-o", run_stamp(), "run", f"PORT={port}", f"PYTHON={sys.executable}"]
    )
    base = f"http://127.0.0.1:{port}"

    def web_up() -> bool:
        if stack.proc.poll() is not None:
            raise AssertionError(stack.output())
        try:
            return httpx.get(f"{base}/health", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_until(web_up, timeout=90, what="make run's web process")
    # The token manage.py wrote is in the database the web process reads.
    response = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "One configuration path", "platforms": ["twitter-post"]},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]

    # The worker reads that job from the same database and the message from the same broker.
    def finished() -> dict[str, object] | None:
        body = httpx.get(f"{base}/api/jobs/{job_id}", headers=headers, timeout=10).json()
        return body if body["status"] in {"completed", "failed"} else None

    body = wait_until(finished, timeout=120, interval=0.5, what="the job to finish")
    assert body["status"] == "completed", body
    # Beat: the same broker, its schedule where the `.env`'s SNAPASSET_VAR_DIR says (the
    # Procfile's ${SNAPASSET_VAR_DIR} came from the file too).
    wait_until(
        lambda: list(var_dir.glob("celerybeat-schedule*")), timeout=60, what="beat's schedule"
    )
    assert f"db -> {var_dir / 'celerybeat-schedule'}" in stack.output()
    # The environment wins over the file: `make run` set DEBUG=true, the file says false.
    debug_page = httpx.get(f"{base}/no-such-page", timeout=10)
    assert debug_page.status_code == 404 and "DEBUG = True" in debug_page.text

    # Flower: its credentials come from the `.env`, and it sees make run's workers on the
    # same broker.
    flower_port = free_port()
    flower = checkout.start(
        "flower",
        [sys.executable, "-m", "celery", "-A", "snapasset", "flower", f"--port={flower_port}",
         "--address=127.0.0.1"],
    )  # fmt: skip
    flower_base = f"http://127.0.0.1:{flower_port}"

    def flower_answers() -> httpx.Response | None:
        if flower.proc.poll() is not None:
            raise AssertionError(flower.output())
        try:
            return httpx.get(f"{flower_base}/", timeout=3)
        except httpx.HTTPError:
            return None

    assert wait_until(flower_answers, timeout=60, what="flower").status_code == 401
    auth = ("ops", flower_password)

    def workers_seen() -> list[str]:
        answer = httpx.get(f"{flower_base}/api/workers?refresh=1", auth=auth, timeout=20)
        assert answer.status_code == 200, answer.text
        return [name for name in answer.json() if name.startswith("images@")]

    assert wait_until(workers_seen, timeout=60, interval=1, what="flower to see the worker")


def test_the_process_environment_wins_over_the_env_file(checkout: Checkout) -> None:
    checkout.write_env(dotenv(DEBUG="true", SUBMIT_RATE="5/min", LOG_TO_FILES="false"))
    code = "from django.conf import settings; print(settings.SUBMIT_RATE)"
    from_file = checkout.python("manage.py", "shell", "-v", "0", "-c", code)
    assert from_file.stdout.strip() == "5/min", from_file.stderr
    from_env = checkout.python("manage.py", "shell", "-v", "0", "-c", code, SUBMIT_RATE="7/min")
    assert from_env.stdout.strip() == "7/min", from_env.stderr
    # `make run` starts honcho through the same loader: the Procfile's variables follow it.
    show = ["-m", "snapasset.env", "sh", "-c", "echo $SUBMIT_RATE"]
    assert checkout.python(*show).stdout.strip() == "5/min"
    assert checkout.python(*show, SUBMIT_RATE="7/min").stdout.strip() == "7/min"
