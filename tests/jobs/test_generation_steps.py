"""The image step of a job, run in-process on the real database: platforms rendered on
threads are each recorded as they finish, and a cancel between steps still stops the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from PIL import Image

from jobs.models import Job, JobStatus
from jobs.platforms import PLATFORM_IDS, PLATFORMS
from jobs.services import generation
from jobs.services.control import job_cancel
from jobs.services.generation import job_run_generation
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("threads", [1, 2])
def test_a_job_renders_every_platform_to_its_size(
    alice: Any, media_root: Path, settings: Any, threads: int
) -> None:
    settings.IMAGE_RENDER_THREADS = threads
    job = JobFactory(owner=alice, platforms=list(PLATFORM_IDS), output_format="webp")

    job_run_generation(job_id=str(job.id))

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.progress == 100
    images = {image.platform_id: image for image in job.images.all()}
    assert set(images) == set(PLATFORM_IDS)
    for platform_id, image in images.items():
        with Image.open(media_root / image.storage_path) as out:
            assert out.size == (PLATFORMS[platform_id].width, PLATFORMS[platform_id].height)
            assert out.format == "WEBP"


def test_a_resumed_job_renders_only_the_platforms_it_lacks(alice: Any) -> None:
    job = JobFactory(owner=alice, platforms=list(PLATFORM_IDS), output_format="jpeg")
    job_run_generation(job_id=str(job.id))
    first = job.images.get(platform_id="instagram-post")
    job.images.exclude(platform_id="instagram-post").delete()
    Job.objects.filter(pk=job.pk).update(status=JobStatus.WAITING, progress=0)

    sizes: list[tuple[int, int]] = []
    original = Image.Image.resize

    def spy(self: Image.Image, size: Any, *args: Any, **kwargs: Any) -> Image.Image:
        sizes.append(tuple(size))
        return original(self, size, *args, **kwargs)

    Image.Image.resize = spy  # type: ignore[method-assign]
    try:
        job_run_generation(job_id=str(job.id))
    finally:
        Image.Image.resize = original  # type: ignore[method-assign]

    lacking = [p for p in PLATFORM_IDS if p != "instagram-post"]
    assert sorted(sizes) == sorted((PLATFORMS[p].width, PLATFORMS[p].height) for p in lacking)
    assert job.images.count() == len(PLATFORM_IDS)
    assert job.images.get(platform_id="instagram-post").pk == first.pk
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED


class OneAtATime:
    """The render stream without ``ready()``: each platform is recorded on its own, so the
    steps between platforms are fixed (renders that finished together are otherwise
    recorded as one fenced batch, tests/jobs/test_pipeline_parallel.py)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __iter__(self) -> OneAtATime:
        return self

    def __next__(self) -> Any:
        return next(self.stream)

    def close(self) -> None:
        getattr(self.stream, "close", lambda: None)()


def test_a_job_cancelled_between_platforms_stops_and_removes_its_outputs(
    alice: Any, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    render_missing = generation._render_missing
    monkeypatch.setattr(generation, "_render_missing", lambda *a: OneAtATime(render_missing(*a)))
    job = JobFactory(owner=alice, platforms=list(PLATFORM_IDS), output_format="jpeg")
    recorded: list[str] = []

    def cancel_after_two(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        # A record is one statement (the fenced progress and the rows' upsert): one that
        # wrote rows recorded platforms; one fenced off by the cancel writes none.
        if 'INSERT INTO "jobs_generatedimage"' in sql and context["cursor"].rowcount > 0:
            recorded.append(sql)
            if len(recorded) == 2:  # the user cancels while the second platform is recorded
                job_cancel(job=Job.objects.get(pk=job.pk))
        return result

    with connection.execute_wrapper(cancel_after_two):
        job_run_generation(job_id=str(job.id))

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert len(recorded) == 2  # no platform was recorded after the cancel
    assert not job.images.exists()
    assert not [p for p in media_root.rglob("*") if p.is_file()]
