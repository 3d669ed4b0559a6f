"""Shared fixtures: users alice, bob and staff; API clients; real worker and web processes.

The suite runs against the real Postgres and Redis of the machine (DATABASE_URL and
REDIS_URL, set per run by `make test`), never mocks of them. End-to-end fixtures start a
real Celery worker and a real uvicorn in their own processes, pointed at the test database.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from snapasset.core.tokens import api_token_create

ROOT = Path(__file__).resolve().parent.parent
# Fixtures of the OpenAI and Supabase fakes (fake_openai, use_fake_supabase...) and the
# fault tests' stack of real processes (live_stack).
pytest_plugins = ["tests.fakes.fixtures", "tests.chaos.fixtures"]


@pytest.fixture(autouse=True)
def media_root(tmp_path: Path, settings: Any) -> Path:
    """Every test writes files to its own temporary MEDIA_ROOT."""
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = media  # FileSystemStorage re-reads it on setting_changed
    return media


@pytest.fixture(autouse=True)
def _no_remembered_redis_outage() -> None:
    """A test that stopped Redis on purpose leaves no outage remembered for the next one
    (snapasset.core.redis_clients.outage_known)."""
    from snapasset.core.redis_clients import forget_outages

    forget_outages()


def make_user(username: str, *, staff: bool = False) -> Any:
    user = get_user_model().objects.create_user(username=username, is_staff=staff)
    return user


def api_key_for(user: Any) -> str:
    """A new API key of ``user`` (the database keeps only its digest)."""
    return api_token_create(user=user)


def client_for(user: Any, *, keyword: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {api_key_for(user)}")
    return client


@pytest.fixture
def alice(db: None) -> Any:
    return make_user("alice")


@pytest.fixture
def bob(db: None) -> Any:
    return make_user("bob")


@pytest.fixture
def staff(db: None) -> Any:
    return make_user("staff", staff=True)


@pytest.fixture
def alice_client(alice: Any) -> APIClient:
    return client_for(alice)


@pytest.fixture
def bob_client(bob: Any) -> APIClient:
    return client_for(bob)


@pytest.fixture
def staff_client(staff: Any) -> APIClient:
    return client_for(staff)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


# --- Real processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url_of_test_db() -> str:
    """The URL of the database pytest-django created, for child processes."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def child_env(**overrides: str | None) -> dict[str, str]:
    """The environment of a child process: this run's, on the test database and Redis, with
    ``overrides`` (None removes a variable). It inherits development mode (DEBUG=true) from
    `make test`; a test of production behaviour removes it."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "snapasset.settings",
            "DATABASE_URL": database_url_of_test_db(),
            "REDIS_URL": settings.REDIS_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class ManagedProcess:
    """A child process with its output in a log file, stopped (and reaped) on exit."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def start_worker(tmp_path: Path, transactional_db: None) -> Iterator[Callable[..., ManagedProcess]]:
    """Start a real Celery worker process on the test database: start_worker(queues=...)."""
    started: list[ManagedProcess] = []

    def start(
        *, queues: str = "images,cleanup", concurrency: int = 2, env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> ManagedProcess:  # fmt: skip
        node = name or f"w{len(started)}-{os.getpid()}"
        argv = [
            sys.executable, "-m", "celery", "-A", "snapasset", "worker", "-Q", queues,
            "-n", f"{node}@%h", "--concurrency", str(concurrency), "-l", "info",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        proc = ManagedProcess(node, argv, child_env(**(env or {})), tmp_path)
        started.append(proc)
        wait_until(
            lambda: "ready." in proc.output() or proc.proc.poll() is not None,
            timeout=60,
            what=f"worker {node} to start",
        )
        assert proc.proc.poll() is None, proc.output()
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_web(tmp_path: Path, transactional_db: None) -> Iterator[Callable[..., str]]:
    """Start a real uvicorn on the test database; returns its base URL (and
    ``start.process(base)`` its process, for its output)."""
    started: list[ManagedProcess] = []
    proc_by_base: dict[str, ManagedProcess] = {}

    def start(*, env: dict[str, str | None] | None = None, access_log: bool = False) -> str:
        port = free_port()
        argv = [
            sys.executable, "-m", "uvicorn", "snapasset.asgi:application",
            "--host", "127.0.0.1", "--port", str(port),
        ] + ([] if access_log else ["--no-access-log"])  # fmt: skip
        proc = ManagedProcess(f"web-{port}", argv, child_env(**(env or {})), tmp_path)
        proc_by_base[f"http://127.0.0.1:{port}"] = proc
        started.append(proc)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.proc.poll() is not None:
                raise AssertionError(proc.output())
            try:
                return httpx.get(f"{base}/health", timeout=10).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, what="uvicorn to answer")
        return base

    start.process = proc_by_base.__getitem__  # type: ignore[attr-defined]
    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session", autouse=True)
def _clean_redis_db() -> Iterator[None]:
    """The run's Redis db number starts and ends empty."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError:
        pass
    yield
    try:
        client.flushdb()
    except redis.ConnectionError:
        pass


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
