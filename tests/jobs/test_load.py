"""Load: 1,000 jobs through uvicorn, two worker processes and the sweeper running throughout.

Each job asks for one small platform so the run stays within a few minutes on two cores
(about 0.1 s of CPU per job with the local provider). LOAD_TEST_JOBS changes the count.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.db.models import Count, Sum

from jobs.models import GeneratedImage, Job, JobKind, JobStatus
from tests.conftest import make_user
from tests.jobs.faults import RedisServer, Stack, media_files, wait_all_finished

pytestmark = [pytest.mark.e2e, pytest.mark.load, pytest.mark.slow]

JOBS = int(os.environ.get("LOAD_TEST_JOBS", "1000"))
SUBMITTERS = 4


def test_a_thousand_jobs_all_complete_once_and_the_stats_equal_the_rows(
    stack: Stack, broker: RedisServer, media_root: Path
) -> None:
    from tests.conftest import api_key_for

    stack.token = api_key_for(make_user("loadstaff", staff=True))
    stack.web(JOB_MAX_PENDING_PER_USER=str(JOBS * 2), SUBMIT_RATE="off")  # load, not abuse
    # The sweeper runs every 2 s and calls a waiting job overdue after 5 s: most of the
    # backlog is "overdue" for most of the run, and none of it may be sent twice.
    clocks = {"JOB_SWEEP_INTERVAL_SECONDS": "2", "JOB_ENQUEUE_OVERDUE_SECONDS": "5"}
    stack.maintenance(**clocks)
    workers = [stack.worker(**clocks), stack.worker(**clocks)]

    started = time.monotonic()
    with httpx.Client(base_url=stack.base, headers=stack.headers, timeout=30) as client:

        def submit(n: int) -> str:
            body = {"prompt": f"Load {n}", "platforms": ["twitter-post"], "format": "png"}
            response = client.post("/api/jobs/generate", json=body)
            assert response.status_code == 202, response.text
            return str(response.json()["jobId"])

        with ThreadPoolExecutor(SUBMITTERS) as pool:
            job_ids = list(pool.map(submit, range(JOBS)))
        submitted = time.monotonic() - started
        wait_all_finished(job_ids, timeout=max(600, JOBS * 0.6))
        elapsed = time.monotonic() - started
        stats = client.get("/api/jobs/stats/overview").json()["imageGeneration"]

    # Image jobs only: beat's daily cleanup may fall inside the run and add a cleanup job.
    image_jobs = Job.objects.filter(kind=JobKind.IMAGE_GENERATION)
    assert image_jobs.filter(status=JobStatus.COMPLETED).count() == JOBS
    assert GeneratedImage.objects.count() == JOBS
    assert (
        not GeneratedImage.objects.values("job", "platform_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .exists()
    )
    assert image_jobs.aggregate(calls=Sum("generation_calls"))["calls"] == JOBS
    rows = {status: image_jobs.filter(status=status).count() for status in JobStatus.values}
    assert {status: stats[status] for status in JobStatus.values} == rows
    outputs = [p for p in media_files(media_root) if p.relative_to(media_root).parts[0] != "tmp"]
    assert len(outputs) == JOBS

    logs = "".join(worker.output() for worker in workers)
    duplicates = logs.count(": nothing to do")
    sweeps = "".join(proc.output() for proc in stack.extra) + "".join(
        p.output() for p in stack.maintenance_workers
    )
    resent = sum(
        int(line.split("resent ")[1].split(",")[0])
        for line in sweeps.splitlines()
        if "sweeper: resent" in line
    )
    print(
        f"\nload: {JOBS} jobs, submitted in {submitted:.1f}s ({JOBS / submitted:.0f}/s), "
        f"all completed in {elapsed:.1f}s ({JOBS / elapsed:.1f} jobs/s); "
        f"duplicate deliveries {duplicates}, messages resent by the sweeper {resent}"
    )
    assert resent == 0
