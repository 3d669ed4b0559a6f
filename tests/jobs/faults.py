"""Helpers for the fault tests: a Redis broker of the test's own, and a whole stack on it.

The shared Redis of the machine must never be stopped or flushed, so every test that kills,
flushes or stops the broker starts its own ``redis-server`` (no persistence: a restart comes
back empty, like a broker that lost its data) and points every process at it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import ManagedProcess, child_env, free_port, wait_until

REDIS_SERVER = "/usr/bin/redis-server"

# Short clocks for the children, so a stall or an overdue message is seen in seconds.
FAST_CLOCKS = {
    "JOB_HEARTBEAT_SECONDS": "1",
    "JOB_LEASE_SECONDS": "3",
    "JOB_SWEEP_INTERVAL_SECONDS": "1",
    "JOB_ENQUEUE_OVERDUE_SECONDS": "2",
    "JOB_RETRY_BACKOFF_SECONDS": "0",
}
# A legitimate production knob that makes each platform step take a second or more, so a
# test can act between steps without a test hook in the code.
SLOW_STEPS = {"PNG_COMPRESS_LEVEL": "9"}


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self.is_up, timeout=10, what="redis-server to start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def is_up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def queued(self, queue: str = "images") -> int:
        """Messages ready in a queue, all priorities together."""
        client = self.client()
        return sum(int(client.llen(queue if not p else f"{queue}:{p}")) for p in range(10))


@contextmanager
def celery_app_on(url: str) -> Iterator[None]:
    """Point this test process's Celery app (which read REDIS_URL at import) at ``url``."""
    from kombu import pools

    from snapasset.celery import app

    def reset() -> None:
        # The app's pools are kombu's process-wide ones, keyed by broker URL: closing only
        # ours would leave a closed pool registered for the URL we restore ("Acquire on
        # closed pool" for every later test that submits in-process). Drop them all.
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    original = app.conf.broker_url
    app.conf.broker_url = url
    reset()
    try:
        yield
    finally:
        app.conf.broker_url = original
        reset()


class Stack:
    """Web, workers and beat processes of one test, all on the test's own broker."""

    def __init__(
        self,
        broker: RedisServer,
        tmp_path: Path,
        start_worker: Callable[..., ManagedProcess],
        start_web: Callable[..., str],
    ) -> None:
        self.broker = broker
        self.tmp_path = tmp_path
        self._start_worker = start_worker
        self._start_web = start_web
        self.extra: list[ManagedProcess] = []
        self.maintenance_workers: list[ManagedProcess] = []
        self.base = ""
        self.token = ""
        self.headers: dict[str, str] = {}

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "REDIS_URL": self.broker.url,
            "SNAPASSET_VAR_DIR": str(self.tmp_path / "var"),
            **FAST_CLOCKS,
        }
        env.update(overrides)
        return env

    def web(self, **env: str) -> str:
        self.base = self._start_web(env=self.env(**env))
        self.headers = {"Authorization": f"Token {self.token}"}
        return self.base

    def worker(self, *, queues: str = "images", concurrency: int = 1, **env: str) -> ManagedProcess:
        return self._start_worker(queues=queues, concurrency=concurrency, env=self.env(**env))

    def maintenance(self, **env: str) -> None:
        """What keeps jobs alive through faults: beat (the sweeper's clock) and the worker of
        the maintenance queue that runs the sweeper."""
        self.maintenance_workers.append(self.worker(queues="cleanup", **env))
        (self.tmp_path / "var").mkdir(exist_ok=True)
        argv = [
            sys.executable, "-m", "celery", "-A", "snapasset", "beat", "-l", "info",
            "-s", str(self.tmp_path / "var" / "beat-schedule"),
        ]  # fmt: skip
        beat = ManagedProcess(
            f"beat-{len(self.extra)}", argv, child_env(**self.env(**env)), self.tmp_path
        )
        self.extra.append(beat)

    def submit(self, **body: Any) -> str:
        body.setdefault("prompt", "A lighthouse in a storm")
        response = httpx.post(
            f"{self.base}/api/jobs/generate", json=body, headers=self.headers, timeout=10
        )
        assert response.status_code == 202, response.text
        return str(response.json()["jobId"])

    def close(self) -> None:
        for proc in self.extra:
            proc.stop()


def sigkill(proc: ManagedProcess) -> None:
    """Kill a worker like the OOM killer or a lost machine would: no chance to clean up."""
    proc.signal(signal.SIGKILL)
    proc.proc.wait(timeout=10)


def pool_processes(proc: ManagedProcess) -> list[int]:
    """The pids of a prefork worker's pool processes (children of its main process)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == proc.proc.pid:
            children.append(int(stat.parent.name))
    return children


def sigterm_main(proc: ManagedProcess) -> None:
    """SIGTERM to the worker's main process only, as `docker stop` does to PID 1."""
    os.kill(proc.proc.pid, signal.SIGTERM)


def wait_for_job(
    job_id: str, predicate: Callable[[Any], bool], *, timeout: float, what: str
) -> Any:
    from jobs.models import Job

    def check() -> Any:
        job = Job.objects.filter(pk=job_id).first()
        return job if job is not None and predicate(job) else None

    return wait_until(check, timeout=timeout, interval=0.05, what=what)


def wait_all_finished(job_ids: list[str], *, timeout: float) -> None:
    from jobs.models import FINISHED_STATUSES, Job

    def done() -> bool:
        return Job.objects.filter(pk__in=job_ids, status__in=FINISHED_STATUSES).count() == len(
            job_ids
        )

    wait_until(done, timeout=timeout, interval=0.25, what=f"{len(job_ids)} jobs to finish")


def media_files(media_root: Path) -> list[Path]:
    return sorted(path for path in media_root.rglob("*") if path.is_file())
