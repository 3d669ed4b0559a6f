"""One job from outside, as a client sees it: POST /api/jobs/generate, then the job's live
stream (GET /api/sse/jobs/{id}, token auth) until its `final` event; the time from the POST
to the moment the `final` frame arrives. Sequential jobs (an idle worker for each), six
platforms, a real web server, Celery worker (the production default of 2 pool processes),
Postgres and Redis; with the offline `local` provider and with OpenAI's client pointed at
the loopback fake (its 1024x1024 picture, answered at once).

    python -m bench.e2e [--jobs 50] [--providers local,openai]

The old Bull server took 784 ms for the same (POST -> completed, design/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench._support import BenchEnv, bench_env, machine, percentile, table

OLD_SERVER_MS = 784.0
TARGET_P50_MS, TARGET_P99_MS = 250.0, 350.0


def post_job(conn: http.client.HTTPConnection, token: str, platforms: list[str]) -> str:
    body = json.dumps({"prompt": "A lighthouse at dusk over a stormy sea", "platforms": platforms})
    headers = {"Content-Type": "application/json", "Authorization": f"Token {token}"}
    try:
        conn.request("POST", "/api/jobs/generate", body=body, headers=headers)
        response = conn.getresponse()
    except (ConnectionError, http.client.RemoteDisconnected):
        # The server closed the idle keep-alive connection (its 5 s timeout): a new one.
        conn.close()
        conn.request("POST", "/api/jobs/generate", body=body, headers=headers)
        response = conn.getresponse()
    payload = response.read()
    if response.status not in (200, 201, 202):
        raise RuntimeError(f"POST {response.status}: {payload[:300]!r}")
    return str(json.loads(payload)["jobId"])


def follow_to_final(port: int, token: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Open the job's stream and read it until `final`; returns that event's data."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "GET", f"/api/sse/jobs/{job_id}",
            headers={"Accept": "text/event-stream", "Authorization": f"Token {token}"},
        )  # fmt: skip
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"stream {response.status}: {response.read()[:300]!r}")
        while True:
            line = response.readline()
            if not line:
                raise RuntimeError(f"stream of {job_id} ended before its final event")
            if line.startswith(b"data:"):
                data = json.loads(line[5:])
                if data.get("type") == "final":
                    return dict(data)
                if data.get("type") == "error":
                    raise RuntimeError(f"stream of {job_id}: {data}")
    finally:
        conn.close()


def sequential_jobs(port: int, token: str, count: int, platforms: list[str]) -> list[float]:
    """Seconds from each POST to its final event, one job at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        job_id = post_job(conn, token, platforms)
        final = follow_to_final(port, token, job_id)
        seconds.append(time.perf_counter() - started)
        if final.get("status") != "completed":
            raise RuntimeError(f"job {job_id} ended {final}")
        time.sleep(0.05)  # the job's tail (result row, ack): the next one finds an idle worker
    conn.close()
    return seconds


@contextmanager
def provider_env(provider: str) -> Iterator[dict[str, str]]:
    """The worker's environment for a provider: the OpenAI fake runs in this process."""
    if provider == "local":
        yield {"IMAGE_PROVIDER": "local"}
        return
    from tests.fakes.openai_server import API_KEY, FakeOpenAI

    fake = FakeOpenAI().start()
    try:
        yield {
            "IMAGE_PROVIDER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": fake.api_base,
        }
    finally:
        fake.stop()


def measure(
    env: BenchEnv, token: str, *, jobs: int, providers: list[str], warmup: int = 3,
    server: str = "uvicorn:1",
) -> dict[str, list[float]]:  # fmt: skip
    """POST -> final event, ms, per provider, on ``server`` (``kind:processes``)."""
    from jobs.platforms import PLATFORM_IDS

    six = list(PLATFORM_IDS)
    kind, processes = server.split(":")
    web, base = env.start_web(workers=int(processes), server=kind)
    port = int(base.rsplit(":", 1)[1])
    results = {}
    try:
        for provider in providers:
            with provider_env(provider) as extra:
                worker = env.start_worker(concurrency=2, queues="images,bench", **extra)
                try:
                    sequential_jobs(port, token, warmup, six)
                    results[provider] = [s * 1000 for s in sequential_jobs(port, token, jobs, six)]
                finally:
                    env.stop(worker)
    finally:
        env.stop(web)
    return results


def rows(results: dict[str, list[float]]) -> list[list[str]]:
    out = []
    for provider, ms in results.items():
        p50, p90, p99 = (percentile(ms, q) for q in (50, 90, 99))
        out.append([
            provider, str(len(ms)), f"{p50:.0f}", f"{p90:.0f}", f"{p99:.0f}", f"{max(ms):.0f}",
            f"{p50 / OLD_SERVER_MS:.2f}x",
        ])  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--providers", default="local,openai")
    parser.add_argument("--server", default="uvicorn:1", help="web server, kind:processes")
    args = parser.parse_args(argv)
    with bench_env() as env:
        ((_, token),) = env.users_with_tokens(1)
        results = measure(
            env, token, jobs=args.jobs, providers=args.providers.split(","), server=args.server
        )
    table(
        f"One job, 6 platforms, POST -> final live event, {args.jobs} sequential jobs "
        f"({machine()}); target p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms",
        ["provider", "jobs", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 / old server's 784 ms"],
        rows(results),
    )


if __name__ == "__main__":
    main()
