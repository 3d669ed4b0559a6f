"""Spend benchmark: `python -m bench.spend` (prints figures; not a test).

Part A (now): the shared limiter alone (jobs/spend/limiter.py). Several processes, each
holding a share of a burst of jobs with mixed priorities (0..9), ask the limiter in the
shared Redis for a slot; a refused job sleeps the wait it was told (as a delayed job's
countdown would) and asks again. Printed: jobs, limit, the busiest window of one period
(a minute by default), total time against the theoretical minimum at that rate, how often
jobs were told to wait, the grant order by priority and the inversions in it.

Part B (``--workers N``): the whole pipeline. A burst of jobs (default 3 x the limit, mixed
priorities) submitted through the submission service to N real ``celery worker`` processes
(one pool process each) on the bench's own database and Redis, against the loopback OpenAI
fake (tests/fakes, as the tests use it) enforcing ``--limit`` images per ``--period``. The
workers' limiter counts over the same period (OPENAI_IMAGES_PERIOD_SECONDS, the production
code path with its clock scaled; the default is the real minute). Printed: jobs, limit, the
busiest window at the fake, its 429s, the total time against the theoretical minimum, the
attempts per job (waiting for a slot spends none), and the wait by priority.

Redis: BENCH_REDIS_URL / BENCH_REDIS_DB (default db 9); the limiter's keys are its own and
removed at the end. Options: --limit (per period), --period (seconds, default 60), --jobs
(default 2.5 x limit; 3 x with --workers), --processes, --seed, --workers.
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing
import random
import sys
import time
import uuid
from typing import Any

from bench._support import REDIS_BASE, REDIS_DB, machine, median, table

# A job: (name, priority). A grant: (wall time, name, priority, first ask, refusals).
Grant = tuple[float, str, int, float, int]


def _limiter(name: str, limit: int, period: float) -> Any:
    import redis

    from jobs.spend.limiter import ProviderLimiter

    client = redis.Redis.from_url(f"{REDIS_BASE}/{REDIS_DB}", socket_timeout=2)
    return ProviderLimiter(name=name, per_minute=limit, period_seconds=period, client=client)


def run_process(
    name: str, limit: int, period: float, jobs: list[tuple[str, int]], start: float, out: Any
) -> None:
    """One worker process's share: ask, wait what it is told, ask again, until granted."""
    limiter = _limiter(name, limit, period)
    time.sleep(max(0.0, start - time.time()))
    due = [(time.time(), job, priority) for job, priority in jobs]
    heapq.heapify(due)
    first_ask: dict[str, float] = {}
    refusals: dict[str, int] = {}
    granted: list[Grant] = []
    while due:
        at, job, priority = heapq.heappop(due)
        time.sleep(max(0.0, at - time.time()))
        first_ask.setdefault(job, time.time())
        decision = limiter.acquire(waiter=job, priority=priority)
        if hasattr(decision, "seconds"):
            refusals[job] = refusals.get(job, 0) + 1
            heapq.heappush(due, (time.time() + decision.seconds, job, priority))
        else:
            granted.append((time.time(), job, priority, first_ask[job], refusals.get(job, 0)))
    out.put(granted)


def busiest(times: list[float], window: float) -> int:
    times = sorted(times)
    most = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def inversions(grants: list[Grant], hold: float) -> int:
    """Grants to a job while a more important one had been waiting longer than the hold
    (the limiter cannot know of a job that has not asked yet, nor serve one that is late)."""
    count = 0
    for i, (at, _, priority, _, _) in enumerate(grants):
        for later_at, _, later_priority, later_first, _ in grants[i + 1 :]:
            if later_priority > priority and later_first < at - hold and later_at > at:
                count += 1
    return count


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="calls per period")
    parser.add_argument("--period", type=float, default=60.0, help="seconds (a minute)")
    parser.add_argument("--jobs", type=int, default=0, help="default: 2.5 x limit")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--workers", type=int, default=0, help="part B: through N real worker processes"
    )
    args = parser.parse_args(argv)
    if args.workers:
        return run_workers(args)
    jobs_count = args.jobs or int(args.limit * 2.5)
    rng = random.Random(args.seed)
    jobs = [(f"job-{i}", rng.randint(0, 9)) for i in range(jobs_count)]
    name = f"bench-{uuid.uuid4().hex[:8]}"
    limiter = _limiter(name, args.limit, args.period)
    print(f"# Spend benchmark (part A: the shared limiter) on {machine()}", flush=True)
    print(
        f"{jobs_count} jobs in {args.processes} processes, limit {args.limit} per "
        f"{args.period:g} s (a call every {limiter.interval:.3f} s), priorities 0..9",
        flush=True,
    )

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start = time.time() + 2.0  # every process asks at the same moment
    processes = [
        context.Process(
            target=run_process,
            args=(name, args.limit, args.period, jobs[i :: args.processes], start, out),
        )
        for i in range(args.processes)
    ]
    try:
        for process in processes:
            process.start()
        grants: list[Grant] = []
        for _ in processes:
            grants.extend(out.get(timeout=3600))
        for process in processes:
            process.join()
    finally:
        limiter.reset()

    grants.sort()
    times = [grant[0] for grant in grants]
    span = times[-1] - times[0]
    nominal = (jobs_count - 1) * args.period / args.limit
    refused = sum(grant[4] for grant in grants)
    table(
        "Rate",
        ["jobs", "limit", "busiest window", "total time", "minimum at the limit", "ratio"],
        [
            [
                jobs_count,
                f"{args.limit}/{args.period:g} s",
                f"{busiest(times, args.period)} calls in {args.period:g} s",
                f"{span:.1f} s",
                f"{nominal:.1f} s",
                f"{span / nominal:.3f}" if nominal else "-",
            ]
        ],
    )
    waited = [grant[0] - grant[3] for grant in grants]
    by_priority = {
        p: [w for w, g in zip(waited, grants, strict=True) if g[2] == p] for p in range(9, -1, -1)
    }
    table(
        "Waiting by priority",
        ["priority", "jobs", "median wait", "max wait"],
        [
            [p, len(ws), f"{median(ws):.1f} s", f"{max(ws):.1f} s"]
            for p, ws in by_priority.items()
            if ws
        ],
    )
    order = "".join(str(grant[2]) for grant in grants)
    print(f"\nGrant order by priority: {order[:120]}{'...' if len(order) > 120 else ''}")
    print(
        f"Told to wait: {refused} times ({refused / jobs_count:.1f} per job); priority "
        f"inversions (a job served while a more important one had waited > "
        f"{limiter.hold_seconds:.1f} s): {inversions(grants, limiter.hold_seconds)}",
        flush=True,
    )
    return 0


def run_workers(args: Any) -> int:
    """Part B: the burst through real worker processes and the rate-limited OpenAI fake."""
    from bench._support import bench_env, wait_until
    from tests.fakes.openai_server import API_KEY, FakeOpenAI

    period = int(args.period)
    jobs_count = args.jobs or 3 * args.limit
    rng = random.Random(args.seed)
    priorities = [rng.randint(0, 9) for _ in range(jobs_count)]
    print(f"# Spend benchmark (part B: {args.workers} real workers) on {machine()}", flush=True)
    fake = FakeOpenAI(images_per_minute=args.limit, window_seconds=float(period)).start()
    try:
        with bench_env() as env:
            from django.contrib.auth import get_user_model

            from jobs.models import FINISHED_STATUSES, Job, JobStatus
            from jobs.services.submission import job_create_generation
            from jobs.spend.models import ProviderCall

            worker_env = {
                "IMAGE_PROVIDER": "openai",
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": fake.api_base,
                "OPENAI_IMAGES_PER_MINUTE": str(args.limit),
                "OPENAI_IMAGES_PERIOD_SECONDS": str(period),
            }
            for _ in range(args.workers):
                env.start_worker(concurrency=1, **worker_env)
            owner, _ = get_user_model().objects.get_or_create(username="bench-spend")
            print(
                f"{jobs_count} jobs, limit {args.limit} per {period} s, {args.workers} worker "
                "processes, priorities 0..9; submitting",
                flush=True,
            )
            started = time.time()
            ids = [
                job_create_generation(
                    actor=owner, prompt=f"Spend bench {n} {uuid.uuid4().hex[:6]}",
                    platforms=["instagram-post"], priority=priority,
                ).job.pk
                for n, priority in enumerate(priorities)
            ]  # fmt: skip
            minimum = (jobs_count - 1) * period / args.limit
            wait_until(
                lambda: (
                    not Job.objects.filter(pk__in=ids)
                    .exclude(status__in=FINISHED_STATUSES)
                    .exists()
                ),
                timeout=minimum * 2 + 300,
                what="every job to end",
            )
            finished = time.time()
            jobs = list(Job.objects.filter(pk__in=ids))
            calls = {c.job_id: c for c in ProviderCall.objects.filter(job_id__in=ids)}
            completed = sum(job.status == JobStatus.COMPLETED for job in jobs)
            attempts = sorted({job.attempts_made for job in jobs})
    finally:
        fake.stop()

    accepted = sorted(fake.accepted_at)
    span = accepted[-1] - accepted[0] if accepted else 0.0
    table(
        "Through the workers",
        [
            "jobs", "completed", "limit", "busiest window at the fake", "429s", "calls",
            "first to last call", "minimum at the limit", "ratio", "submit to last done",
        ],
        [[
            jobs_count, completed, f"{args.limit}/{period} s",
            f"{fake.busiest_window(float(period))} calls in {period} s",
            len(fake.rate_limited_at), len(accepted), f"{span:.1f} s", f"{minimum:.1f} s",
            f"{span / minimum:.3f}" if minimum else "-", f"{finished - started:.1f} s",
        ]],
    )  # fmt: skip
    waits: dict[int, list[float]] = {}
    for job in jobs:
        call = calls.get(job.pk)
        if call is not None:
            waits.setdefault(job.priority, []).append(
                (call.created_at - job.created_at).total_seconds()
            )
    table(
        "Submit to paid call, by priority",
        ["priority", "jobs", "median wait", "max wait"],
        [
            [p, len(ws), f"{median(ws):.1f} s", f"{max(ws):.1f} s"]
            for p, ws in sorted(waits.items(), reverse=True)
        ],
    )
    print(f"\nAttempts per job: {attempts} (waiting for a slot spends none)", flush=True)
    return 0 if completed == jobs_count and not fake.rate_limited_at else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
