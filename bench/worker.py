"""The worker side, on a real Celery worker, Postgres and Redis, each against a bare Celery
no-op task in the same run:

1. enqueue -> task start with an idle worker (task_prerun, and the job's claim time);
2. worker CPU per job outside the image work (provider and rendering stubbed out in the
   worker, BENCH_STUB_IMAGE=1; parent + pool process CPU from /proc);
3. jobs/s with the local provider and 2 pool processes, and memory (worker RSS per
   process idle and after load, web RSS idle).

    python -m bench.worker [--latency 100] [--cpu-jobs 100] [--jobs 100] [--platforms 2]
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from bench._support import (
    BenchEnv,
    bench_env,
    children,
    cpu_seconds,
    machine,
    median,
    percentile,
    rss_mib,
    table,
    wait_until,
)

TARGET_START_P99_MS, TARGET_CPU_MS = 10.0, 5.0


def _started_at(env: BenchEnv, task_id: str) -> float:
    popped = env.redis().blpop([f"bench:start:{task_id}"], timeout=60)
    if popped is None:
        raise RuntimeError(f"task {task_id} did not start")
    return float(popped[1])


def _new_jobs(owner: Any, count: int, platforms: list[str], fmt: str = "png") -> list[Any]:
    from django.utils import timezone

    from jobs.models import Job, JobKind

    return [
        Job.objects.create(
            owner=owner,
            kind=JobKind.IMAGE_GENERATION,
            prompt=f"Bench picture {i} {uuid.uuid4().hex[:6]}",
            platforms=platforms,
            output_format=fmt,
            enqueued_at=timezone.now(),
        )  # fmt: skip
        for i in range(count)
    ]


def _wait_finished(job_ids: list[Any], timeout: float) -> None:
    from jobs.models import FINISHED_STATUSES, Job, JobStatus

    def done() -> bool:
        return not Job.objects.filter(pk__in=job_ids).exclude(status__in=FINISHED_STATUSES).exists()

    wait_until(done, timeout=timeout, what=f"{len(job_ids)} jobs to finish")
    failed = Job.objects.filter(pk__in=job_ids).exclude(status=JobStatus.COMPLETED)
    if failed:
        reasons = sorted({f"{job.status}: {job.failed_reason[:120]}" for job in failed[:20]})
        raise RuntimeError(f"{failed.count()} bench jobs did not complete: {reasons}")


def measure_start_latency(env: BenchEnv, owner: Any, count: int) -> dict[str, list[float]]:
    from jobs.models import Job
    from jobs.services.delivery import job_send_message
    from snapasset.celery import app

    worker = env.start_worker(concurrency=1)
    noop, ours, claimed = [], [], []
    jobs = _new_jobs(owner, count, ["instagram-post"], "jpeg")
    for job in jobs:  # alternate, one at a time: the worker is idle when each arrives
        task_id = str(uuid.uuid4())
        sent = time.time()
        app.send_task("bench.noop", task_id=task_id, queue="bench")
        noop.append(_started_at(env, task_id) - sent)
        time.sleep(0.05)  # past the no-op's tail (its result row, ack): the worker is idle
        sent = time.time()
        job_send_message(job_id=str(job.id), kind=job.kind, priority=job.priority)
        ours.append(_started_at(env, str(job.id)) - sent)
        _wait_finished([job.id], timeout=60)
        claimed.append(Job.objects.get(pk=job.id).processed_at.timestamp() - sent)
        time.sleep(0.05)  # the task's tail (result row, ack) is done: the worker is idle
    env.stop(worker)
    return {"noop": noop, "ours": ours, "claimed": claimed}


def measure_cpu(env: BenchEnv, owner: Any, count: int) -> dict[str, float]:
    """CPU seconds per task of the worker (parent and pool process), no-op vs image job with
    the image work stubbed out."""
    from jobs.platforms import PLATFORM_IDS
    from jobs.services.delivery import job_send_message
    from snapasset.celery import app

    worker = env.start_worker(concurrency=1, BENCH_STUB_IMAGE="1")
    pids = [worker.pid, *children(worker.pid)]

    def total() -> float:
        return sum(cpu_seconds(pid) for pid in pids)

    results = {}
    for _ in range(3):
        task_ids = [str(uuid.uuid4()) for _ in range(count)]
        before = total()
        for task_id in task_ids:
            app.send_task("bench.noop", task_id=task_id, queue="bench")
            _started_at(env, task_id)
        time.sleep(0.3)  # let the last one finish (its result row)
        results.setdefault("noop", []).append((total() - before - 0.0) / count)

        jobs = _new_jobs(owner, count, list(PLATFORM_IDS))
        before = total()
        for job in jobs:
            job_send_message(job_id=str(job.id), kind=job.kind, priority=job.priority)
            _wait_finished([job.id], timeout=60)
        time.sleep(0.3)
        results.setdefault("ours", []).append((total() - before) / count)
    env.stop(worker)
    return {key: median(values) for key, values in results.items()}


def measure_throughput(
    env: BenchEnv, owner: Any, count: int, platforms: int, threads: int
) -> dict[str, Any]:
    from jobs.models import Job
    from jobs.platforms import PLATFORM_IDS
    from jobs.services.delivery import job_send_message

    worker = env.start_worker(concurrency=2, IMAGE_RENDER_THREADS=str(threads))
    pool = children(worker.pid)
    idle = {"parent": rss_mib(worker.pid), "pool": [rss_mib(pid) for pid in pool]}
    jobs = _new_jobs(owner, count, list(PLATFORM_IDS[:platforms]))
    start = time.time()
    for job in jobs:
        job_send_message(job_id=str(job.id), kind=job.kind, priority=job.priority)
    _wait_finished([job.id for job in jobs], timeout=600)
    last = max(
        j.finished_at.timestamp() for j in Job.objects.filter(pk__in=[job.id for job in jobs])
    )
    loaded = {"parent": rss_mib(worker.pid), "pool": [rss_mib(pid) for pid in children(worker.pid)]}
    env.stop(worker)
    return {
        "jobs_per_s": count / (last - start),
        "idle": idle,
        "loaded": loaded,
        "threads": threads,
    }


def measure_web_rss(env: BenchEnv) -> float:
    import httpx

    web, base = env.start_web(workers=1)
    httpx.get(f"{base}/health", timeout=10)
    httpx.get(f"{base}/api/platforms", timeout=10)
    time.sleep(0.5)
    rss = rss_mib(web.pid)
    env.stop(web)
    return rss


def run(
    *, latency: int = 100, cpu_jobs: int = 100, jobs: int = 100, platforms: int = 2
) -> dict[str, Any]:
    with bench_env() as env:
        ((user_id, _),) = env.users_with_tokens(1)
        from django.contrib.auth import get_user_model

        owner = get_user_model().objects.get(pk=user_id)
        lat = measure_start_latency(env, owner, latency)
        cpu = measure_cpu(env, owner, cpu_jobs)
        runs = [measure_throughput(env, owner, jobs, platforms, threads) for threads in (2, 1)]
        web_rss = measure_web_rss(env)

    ms = {k: [x * 1000 for x in v] for k, v in lat.items()}
    rows = [
        ["enqueue -> task start, bare no-op task",
         f"{percentile(ms['noop'], 50):.2f} / {percentile(ms['noop'], 99):.2f} ms",
         "baseline"],
        ["enqueue -> task start, jobs.generate_images",
         f"{percentile(ms['ours'], 50):.2f} / {percentile(ms['ours'], 99):.2f} ms",
         f"p99 <= {TARGET_START_P99_MS} ms; "
         f"{percentile(ms['ours'], 99) / percentile(ms['noop'], 99):.2f}x no-op"],
        ["enqueue -> job claimed (status active)",
         f"{percentile(ms['claimed'], 50):.2f} / {percentile(ms['claimed'], 99):.2f} ms",
         "context"],
        ["worker CPU per task, bare no-op", f"{cpu['noop'] * 1000:.1f} ms", "baseline"],
        ["worker CPU per 6-platform job, image work stubbed", f"{cpu['ours'] * 1000:.1f} ms",
         f"<= {TARGET_CPU_MS} ms over no-op: +{(cpu['ours'] - cpu['noop']) * 1000:.1f} ms"],
    ]  # fmt: skip
    for r in runs:
        rows.append([
            f"jobs/s, {jobs} jobs x {platforms} platforms, 2 pool processes, "
            f"{r['threads']} render thread(s)",
            f"{r['jobs_per_s']:.2f}", "report",
        ])  # fmt: skip
    r = runs[0]
    rows.append(
        [
            "worker RSS idle: parent / pool processes",
            f"{r['idle']['parent']:.0f} / "
            + " / ".join(f"{x:.0f}" for x in r["idle"]["pool"])
            + " MiB",
            "report",
        ]
    )
    rows.append(
        [
            "worker RSS after load: parent / pool processes",
            f"{r['loaded']['parent']:.0f} / "
            + " / ".join(f"{x:.0f}" for x in r["loaded"]["pool"])
            + " MiB",
            "report",
        ]
    )
    rows.append(["web (uvicorn, 1 process) RSS idle", f"{web_rss:.0f} MiB", "report"])
    table(
        f"Worker ({machine()}); latencies p50 / p99 of {latency}",
        ["figure", "value", "target"],
        rows,
    )
    return {"latency_ms": ms, "cpu": cpu, "throughput": runs, "web_rss": web_rss}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=int, default=100)
    parser.add_argument("--cpu-jobs", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--platforms", type=int, default=2)
    args = parser.parse_args(argv)
    run(latency=args.latency, cpu_jobs=args.cpu_jobs, jobs=args.jobs, platforms=args.platforms)


if __name__ == "__main__":
    main()
