"""POST /api/jobs/generate/batch against 100 POST /api/jobs/generate: the time to queue 100
jobs of realistic prompts one request at a time (1 client, keep-alive; and 4 clients at
once) and in one batch, on a real uvicorn with Postgres and Redis, in alternating rounds.
No worker runs: messages only queue up (in the bench's own Redis db). Also the SQL
statements per job of each way, counted in-process.

    python -m bench.batch [--rounds 5] [--jobs 100]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench._support import bench_env, machine, median, table
from bench.load import run_load

SINGLE = "/api/jobs/generate"
BATCH = "/api/jobs/generate/batch"
PROMPT = (
    "A cosy independent bookshop on a rainy autumn evening, warm light spilling onto the wet "
    "cobblestones, a tabby cat asleep in the window display among stacks of old hardbacks, "
    "soft watercolour style with muted oranges and deep blues, room at the top for a headline"
)


def item(n: int) -> dict[str, Any]:
    return {
        "prompt": f"{PROMPT} (variant {n})",
        "platforms": ["instagram-post", "instagram-story", "twitter-post"],
        "format": "webp",
        "priority": n % 10,
    }


def count_queries(token: str, jobs: int) -> dict[str, float]:
    """SQL statements per job: one submission, and a batch of ``jobs``."""
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    with override_settings(SUBMIT_RATE=None):
        client.post(SINGLE, item(0), content_type="application/json")  # warm up
        with CaptureQueriesContext(connection) as single:
            response = client.post(SINGLE, item(1), content_type="application/json")
        assert response.status_code == 202, response.content
        with CaptureQueriesContext(connection) as batch:
            response = client.post(
                BATCH, json.dumps([item(n) for n in range(jobs)]), content_type="application/json"
            )
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == jobs, response.content
    return {"single": len(single), "batch": len(batch) / jobs, "batch_total": len(batch)}


def queued_since(before: int, expected: int) -> None:
    from jobs.models import Job

    queued = Job.objects.count() - before
    if queued != expected:
        raise RuntimeError(f"{queued} jobs queued, expected {expected}")


def run(*, rounds: int = 5, jobs: int = 100) -> dict[str, float]:
    with bench_env() as env:
        from jobs.models import Job

        [(_, token)] = env.users_with_tokens(1)
        queries = count_queries(token, jobs)
        print(
            f"SQL statements per job: single {queries['single']}, batch of {jobs} "
            f"{queries['batch']:.2f} ({queries['batch_total']} in all)"
        )
        web, base = env.start_web(workers=1, SUBMIT_RATE="off")
        port = int(base.rsplit(":", 1)[1])
        body = [item(n) for n in range(jobs)]
        clients = 4
        run_load(port, SINGLE, [token], clients=1, requests=20, body=item(0))  # warm up
        run_load(port, BATCH, [token], clients=1, requests=1, body=body[:10])
        figures: dict[str, list[float]] = {"single": [], "parallel": [], "batch": []}
        for _ in range(rounds):
            env.finish_pending_jobs()
            before = Job.objects.count()
            single = run_load(port, SINGLE, [token], clients=1, requests=jobs, body=item(1))
            parallel = run_load(
                port, SINGLE, [token], clients=clients, requests=jobs // clients, body=item(2)
            )
            batch = run_load(port, BATCH, [token], clients=1, requests=1, body=body)
            if single.errors or parallel.errors or batch.errors:
                raise RuntimeError(f"failed requests\n{web.output()[-3000:]}")
            queued_since(before, 2 * jobs + clients * (jobs // clients))
            figures["single"].append(single.elapsed * 1000)
            figures["parallel"].append(parallel.elapsed * 1000)
            figures["batch"].append(batch.latencies[0] * 1000)
        env.stop(web)

    med = {name: median(values) for name, values in figures.items()}
    rows = [
        [f"{jobs} x POST {SINGLE}, 1 client", f"{med['single']:.0f}", f"{med['single'] / jobs:.2f}",
         f"{jobs / med['single'] * 1000:.0f}", "1.00x"],
        [f"{jobs} x POST {SINGLE}, {clients} clients", f"{med['parallel']:.0f}",
         f"{med['parallel'] / jobs:.2f}", f"{jobs / med['parallel'] * 1000:.0f}",
         f"{med['single'] / med['parallel']:.2f}x"],
        [f"1 x POST {BATCH} of {jobs}", f"{med['batch']:.0f}", f"{med['batch'] / jobs:.2f}",
         f"{jobs / med['batch'] * 1000:.0f}", f"**{med['single'] / med['batch']:.2f}x**"],
    ]  # fmt: skip
    table(
        f"Queueing {jobs} jobs: medians of {rounds} rounds ({machine()}, uvicorn 1 process); "
        f"SQL per job: single {queries['single']}, batch {queries['batch']:.2f}",
        ["how", "total (ms)", "per job (ms)", "jobs/s", "speed-up"],
        rows,
    )
    return {**med, **queries}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args(argv)
    run(rounds=args.rounds, jobs=args.jobs)


if __name__ == "__main__":
    main()
