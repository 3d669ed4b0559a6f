"""Retention with frozen time over real files in the test's MEDIA_ROOT: `manage.py cleanup`
and the services the scheduled run uses."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone
from django_celery_results.models import TaskResult

from cleanup import services
from jobs.models import GeneratedImage, Job, JobStatus
from tests.factories import JobFactory
from tests.fakes.supabase_server import FakeSupabase

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def finished_job(owner: Any, status: str, *, name: str) -> Job:
    """A job finished now (frozen), with an output file and its original checkpoint on disk."""
    job = JobFactory(owner=owner, status=status, finished_at=timezone.now(), progress=100)
    output = default_storage.save(
        f"{owner.username}/{name}/instagram-post.png", ContentFile(b"png")
    )
    source = default_storage.save(f"tmp/{owner.username}/{name}/original.png", ContentFile(b"src"))
    GeneratedImage.objects.create(
        job=job, platform_id="instagram-post", width=1080, height=1080, file_size=3,
        storage_path=output, url=f"/media/{output}", format="png",
    )  # fmt: skip
    Job.objects.filter(pk=job.pk).update(source_path=source)
    job.refresh_from_db()
    return job


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("cleanup", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def old_jobs(alice: Any, media_root: Path) -> dict[str, Job]:
    with time_machine.travel(T0, tick=False):
        return {
            "completed": finished_job(alice, JobStatus.COMPLETED, name="done"),
            "failed": finished_job(alice, JobStatus.FAILED, name="failed"),
            "cancelled": finished_job(alice, JobStatus.CANCELLED, name="cancelled"),
        }


def exists(path: str) -> bool:
    return default_storage.exists(path)


def test_temporary_files_go_after_one_day_and_outputs_stay(old_jobs: dict[str, Job]) -> None:
    done = old_jobs["completed"]
    with time_machine.travel(T0 + timedelta(hours=23), tick=False):
        assert "0 files" in run("--type", "temp-files")
        assert exists(done.source_path)
    with time_machine.travel(T0 + timedelta(days=1, hours=1), tick=False):
        out = run("--type", "temp-files")
    assert f"deleted file {done.source_path}" in out
    assert not exists(done.source_path)
    assert exists(done.images.get().storage_path)
    done.refresh_from_db()
    assert done.source_path == ""


def test_failed_generations_go_after_their_retention_with_their_files(
    old_jobs: dict[str, Job], settings: Any
) -> None:
    settings.CLEANUP_FAILED_AFTER_DAYS = 7
    failed, cancelled = old_jobs["failed"], old_jobs["cancelled"]
    failed_output = failed.images.get().storage_path
    with time_machine.travel(T0 + timedelta(days=6), tick=False):
        run("--type", "failed-generations")
    assert Job.objects.filter(pk=failed.pk).exists()
    with time_machine.travel(T0 + timedelta(days=8), tick=False):
        out = run("--type", "failed-generations")
    assert "2 jobs" in out
    assert not Job.objects.filter(pk__in=[failed.pk, cancelled.pk]).exists()
    assert not exists(failed_output) and not exists(failed.source_path)
    assert Job.objects.filter(pk=old_jobs["completed"].pk).exists()


def test_completed_jobs_are_kept_for_the_retention_period_then_deleted(
    old_jobs: dict[str, Job], settings: Any
) -> None:
    settings.CLEANUP_COMPLETED_AFTER_DAYS = 90
    done = old_jobs["completed"]
    output = done.images.get().storage_path
    with time_machine.travel(T0 + timedelta(days=89), tick=False):
        run()  # the scheduled run: --type all
    assert Job.objects.filter(pk=done.pk).exists() and exists(output)
    with time_machine.travel(T0 + timedelta(days=91), tick=False):
        out = run()
    assert f"deleted file {output}" in out
    assert not Job.objects.filter(pk=done.pk).exists()
    assert not GeneratedImage.objects.filter(job_id=done.pk).exists()
    assert not exists(output)


def test_a_dry_run_prints_what_it_would_delete_and_deletes_nothing(
    old_jobs: dict[str, Job],
) -> None:
    failed = old_jobs["failed"]
    output = failed.images.get().storage_path
    with time_machine.travel(T0 + timedelta(days=30), tick=False):
        out = run("--dry-run", "--type", "failed-generations", "--older-than-days", "7")
    assert f"would delete file {output}" in out
    assert "would delete" in out and "2 jobs" in out
    assert exists(output)
    assert Job.objects.filter(pk=failed.pk).exists()


def test_expired_celery_task_results_are_deleted(db: None, settings: Any) -> None:
    with time_machine.travel(T0, tick=False):
        TaskResult.objects.create(task_id="old", status="SUCCESS", date_done=timezone.now())
    with time_machine.travel(T0 + timedelta(days=6), tick=False):
        TaskResult.objects.create(task_id="recent", status="SUCCESS", date_done=timezone.now())
    with time_machine.travel(T0 + timedelta(days=8), tick=False):
        out = run()
    assert "1 task results" in out
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["recent"]


def test_cleanup_deletes_in_bounded_batches_until_done(alice: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "CLEANUP_BATCH_SIZE", 2)
    with time_machine.travel(T0, tick=False):
        jobs = [finished_job(alice, JobStatus.FAILED, name=f"f{i}") for i in range(5)]
    with time_machine.travel(T0 + timedelta(days=10), tick=False):
        first = services.cleanup_batch(cleanup_type="failed-generations", older_than_days=7)
        assert first.deleted_jobs == 2 and first.more
        out = run("--type", "failed-generations")
    assert "3 jobs" in out and "in 2 batches" in out
    assert not Job.objects.filter(pk__in=[job.pk for job in jobs]).exists()


def test_on_supabase_files_are_deleted_a_batch_per_request_not_one_by_one(
    alice: Any, use_fake_supabase: FakeSupabase
) -> None:
    with time_machine.travel(T0, tick=False):
        for i in range(3):
            finished_job(alice, JobStatus.FAILED, name=f"f{i}")
    assert len(use_fake_supabase.names()) == 6  # an output and an original each
    with time_machine.travel(T0 + timedelta(days=10), tick=False):
        batch = services.cleanup_batch(cleanup_type="failed-generations", older_than_days=7)
    assert (batch.deleted_jobs, batch.deleted_files) == (3, 6)
    assert use_fake_supabase.names() == []
    assert len(use_fake_supabase.seen("DELETE")) == 1


def test_the_scheduled_cleanup_queues_a_system_job_of_type_all(db: None) -> None:
    job = services.cleanup_schedule()
    assert job.owner is None
    assert job.params == {"type": "all", "olderThanDays": 7}
