"""The real processes of a deployment, on a Redis of their own, as an operator runs them.

``ChaosStack`` starts web (uvicorn), Celery workers, beat and a private ``redis-server``
with the commands of the Procfile, all pointed at the test database, the loopback OpenAI
fake and (optionally) the Supabase fake. Every process gets its own tag in the fakes' URLs
(``images0.3`` is the third start of images worker 0), so the fakes' request logs say which
process made each call: that is how the campaign knows which paid call a SIGKILL cut short.

Only this module knows how processes are started, so the campaign and the regression tests
survive a change of the code's layout: they speak HTTP, signals and the fakes' logs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import ROOT, ManagedProcess, child_env, free_port, wait_until
from tests.fakes.openai_server import API_KEY, FakeOpenAI
from tests.fakes.supabase_server import SERVICE_KEY, FakeSupabase

REDIS_SERVER = "/usr/bin/redis-server"
BUCKET = "generated-images"
# The private Redis servers of the fault tests take a port from this range (CHAOS_REDIS_PORTS
# overrides it, "6410-6419"); a free port of the OS when all are taken.
DEFAULT_REDIS_PORTS = "6410-6419"

# Short clocks, so that a stall, a lost message or a retry is dealt with in seconds and the
# stack settles in minutes. Every one is a documented setting (README, Configuration).
FAST_CLOCKS = {
    "JOB_HEARTBEAT_SECONDS": "1",
    "JOB_LEASE_SECONDS": "6",
    "JOB_SWEEP_INTERVAL_SECONDS": "2",
    "JOB_ENQUEUE_OVERDUE_SECONDS": "5",
    "JOB_RETRY_BACKOFF_SECONDS": "1",
    "JOB_RETRY_BACKOFF_MAX_SECONDS": "5",
    "JOB_SHUTDOWN_GRACE_SECONDS": "3",
    "WORKER_HEARTBEAT_TTL_SECONDS": "6",
    "SSE_KEEPALIVE_SECONDS": "2",
    "OPENAI_TIMEOUT_SECONDS": "30",
    "SUPABASE_TIMEOUT_SECONDS": "20",
    "SUBMIT_RATE": "off",
    "LOG_TO_FILES": "false",
}


def redis_ports() -> list[int]:
    low, _, high = os.environ.get("CHAOS_REDIS_PORTS", DEFAULT_REDIS_PORTS).partition("-")
    return list(range(int(low), int(high or low) + 1))


class PrivateRedis:
    """A ``redis-server`` of the test's own, without persistence: a restart comes back empty,
    like a broker that lost its data. It may be flushed, frozen (SIGSTOP) and stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        candidates = [p for p in redis_ports() if self.port in (0, p)] + [free_port()]
        for port in candidates:
            self.port = port
            if self.is_up():
                continue  # someone else's server
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(self.workdir), "--loglevel", "warning",
                ],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                wait_until(
                    lambda: self.is_up() or self.proc.poll() is not None,  # type: ignore[union-attr]
                    timeout=10,
                    what="redis-server to start",
                )
            except AssertionError:
                self.proc.kill()
                raise
            if self.proc.poll() is None:
                return self
        raise AssertionError("no port left for a private redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot stop
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        """Alive but not answering: a fork stall, a full disk, a partition dropping packets."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def is_up(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=5
        )

    def flush(self) -> None:
        self.client().flushdb()

    def queued_job_ids(self, queue: str = "images") -> set[str]:
        """Ids of the jobs whose message is ready in a queue (every priority list). A
        message's task id is ``<job id>.<delivery>`` (jobs.services.delivery)."""
        import json

        client = self.client()
        ids = set()
        for key in client.keys(f"{queue}*"):
            if client.type(key) != b"list":
                continue
            for raw in client.lrange(key, 0, -1):
                ids.add(str(json.loads(raw)["headers"]["id"]).partition(".")[0])
        return ids


@dataclass
class Process:
    """One start of one process of the stack (a restart is a new ``Process``)."""

    role: str  # "web", "images0", "cleanup", "beat"...
    tag: str  # role.start, e.g. "images0.3": the tag of its calls in the fakes' logs
    managed: ManagedProcess
    started: float = field(default_factory=time.time)
    ended: float | None = None

    @property
    def pid(self) -> int:
        return self.managed.proc.pid

    def alive(self) -> bool:
        return self.managed.proc.poll() is None

    def output(self) -> str:
        return self.managed.output()

    def kill(self) -> None:
        """SIGKILL to the whole process group (main process and pool children), like the
        OOM killer or a lost machine: no chance to clean up."""
        self.managed.signal(signal.SIGKILL)
        self.managed.proc.wait(timeout=10)
        self.ended = time.time()

    def terminate(self) -> None:
        """SIGTERM to the main process only, as `docker stop` does to PID 1."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)

    def reap(self) -> bool:
        """True once the process has exited (after a SIGTERM)."""
        if self.alive():
            return False
        if self.ended is None:
            self.ended = time.time()
        return True


class ChaosStack:
    """Web, workers, beat, the fakes and a private Redis of one test, on the test database."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        openai: FakeOpenAI,
        supabase: FakeSupabase | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.openai = openai
        self.supabase = supabase
        self.redis = PrivateRedis(tmp_path / "redis").start()
        self.extra_env = {**FAST_CLOCKS, **(env or {})}
        self.processes: list[Process] = []
        self.starts: dict[str, int] = {}
        self.base = ""
        (tmp_path / "var").mkdir(parents=True, exist_ok=True)

    # --- Environment ---------------------------------------------------------------------

    def env(self, tag: str, **overrides: str) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis.url,
            "SNAPASSET_VAR_DIR": str(self.tmp_path / "var"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.tmp_path / "var" / "metrics"),
            "IMAGE_PROVIDER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": f"{self.openai.tagged_url(tag)}/v1",
            **self.extra_env,
        }
        if self.supabase is not None:
            env.update(
                SUPABASE_URL=self.supabase.tagged_url(tag),
                SUPABASE_SERVICE_KEY=SERVICE_KEY,
                SUPABASE_BUCKET=BUCKET,
            )
        env.update(overrides)
        return child_env(**env)

    def _spawn(self, role: str, argv: list[str], **env: str) -> Process:
        self.starts[role] = self.starts.get(role, 0) + 1
        tag = f"{role}.{self.starts[role]}"
        managed = ManagedProcess(tag, argv, self.env(tag, **env), self.tmp_path)
        process = Process(role, tag, managed)
        self.processes.append(process)
        return process

    # --- Processes (the commands of the Procfile) -----------------------------------------

    def start_web(self, **env: str) -> str:
        port = free_port()
        argv = [
            sys.executable, "-m", "uvicorn", "snapasset.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        ]  # fmt: skip
        web = self._spawn("web", argv, **env)
        self.base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if not web.alive():
                raise AssertionError(web.output())
            try:
                return httpx.get(f"{self.base}/health", timeout=10).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=90, what="uvicorn to answer")
        return self.base

    def start_worker(
        self,
        role: str = "images0",
        *,
        queues: str | None = "images",
        concurrency: int = 1,
        wait: bool = True,
        options: tuple[str, ...] = (),
        **env: str,
    ) -> Process:
        """`celery -A snapasset worker -Q <queues>` as the Procfile runs it (mingle and
        gossip on, as in production); ``queues=None`` is the bare command of every Celery
        guide."""
        argv = [sys.executable, "-m", "celery", "-A", "snapasset", "worker"]
        if queues is not None:
            argv += ["-Q", queues]
        argv += ["-n", f"{role}@%h", "--concurrency", str(concurrency), "-l", "info", *options]
        worker = self._spawn(role, argv, **env)
        if wait:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: Process, timeout: float = 90) -> None:
        wait_until(
            lambda: " ready." in worker.output() or not worker.alive(),
            timeout=timeout,
            what=f"worker {worker.tag} to start",
        )
        assert worker.alive(), worker.output()

    def start_beat(self, **env: str) -> Process:
        schedule = self.tmp_path / "var" / "celerybeat-schedule"
        argv = [
            sys.executable, "-m", "celery", "-A", "snapasset", "beat", "-l", "info",
            "-s", str(schedule),
        ]  # fmt: skip
        return self._spawn("beat", argv, **env)

    def close(self) -> None:
        for process in self.processes:
            process.managed.stop(timeout=10)
        self.redis.stop()

    # --- Users ---------------------------------------------------------------------------

    def api_token(self, username: str, *, staff: bool = False) -> str:
        """A token from `manage.py create_api_token`, the README's way."""
        argv = [sys.executable, "manage.py", "create_api_token", username]
        if staff:
            argv.append("--staff")
        out = subprocess.run(
            argv, cwd=ROOT, env=self.env("manage"), check=True, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Token {token}"}


# --- A user's view of the API --------------------------------------------------------------


class ApiClient:
    """One user's view of the API."""

    def __init__(self, stack: ChaosStack, token: str) -> None:
        self.stack, self.headers = stack, stack.headers(token)

    def request(
        self, method: str, path: str, *, timeout: float = 30, **kwargs: Any
    ) -> httpx.Response:
        return httpx.request(
            method, f"{self.stack.base}{path}", headers=self.headers, timeout=timeout, **kwargs
        )

    def submit(self, prompt: str = "A lighthouse in a storm", **body: Any) -> str:
        response = self.request("POST", "/api/jobs/generate", json={"prompt": prompt, **body})
        assert response.status_code == 202, response.text
        return str(response.json()["jobId"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/api/jobs/{job_id}")
        assert response.status_code == 200, f"GET job {job_id}: {response.status_code}"
        return dict(response.json())

    def wait_status(self, job_id: str, *statuses: str, timeout: float) -> dict[str, Any]:
        seen: list[str] = []

        def reached() -> dict[str, Any] | None:
            body = self.job(job_id)
            seen.append(body["status"])
            return body if body["status"] in statuses else None

        try:
            return wait_until(reached, timeout=timeout, interval=0.2, what=f"{statuses}")
        except AssertionError:
            raise AssertionError(
                f"job {job_id} never reached {statuses} in {timeout}s; it stayed "
                f"{seen[-1] if seen else '?'} (last body: {self.job(job_id)})"
            ) from None


def images_downloadable(client: ApiClient, job_id: str) -> list[str]:
    """The platform ids of a completed job's images whose file downloads."""
    result = client.request("GET", f"/api/jobs/{job_id}/result").json()["result"]
    return [
        image["platformId"]
        for image in result["images"]
        if httpx.get(image["url"], timeout=30).status_code == 200
    ]


# --- Reading the fakes' logs ------------------------------------------------------------------

MARKER = re.compile(r"\[cj-(\d+)\]")


def generation_calls(openai: FakeOpenAI, marker: str | None = None) -> list[Any]:
    """Generation requests the OpenAI fake saw, optionally only those whose prompt carries
    ``marker``."""
    calls = openai.generation_calls
    if marker is None:
        return calls
    return [call for call in calls if marker in str(call.json().get("prompt", ""))]


def paid_calls(openai: FakeOpenAI, marker: str) -> list[Any]:
    """Generation requests answered with an image (what the provider bills)."""
    return [call for call in generation_calls(openai, marker) if call.status == 200]
