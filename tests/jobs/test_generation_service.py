"""The generation service in-process: outputs, resume from a checkpoint, fencing, cancel."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage, storages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.live.publish import job_final_payload
from jobs.models import GeneratedImage, Job, JobStatus
from jobs.pipeline import decode_image, render_platform
from jobs.serializers import JobResultBodyField
from jobs.services import control, generation, lease, outcomes, outputs, transitions
from snapasset.core.exceptions import JobCancelled, LeaseLost
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def test_a_job_run_records_one_image_per_platform_and_completes(
    alice: Any, media_root: Path
) -> None:
    job = JobFactory(
        owner=alice, platforms=["twitter-post", "instagram-story"], output_format="jpeg"
    )
    assert generation.job_run_generation(job_id=str(job.id)) is None
    job.refresh_from_db()
    assert (job.status, job.progress, job.attempts_made) == (JobStatus.COMPLETED, 100, 1)
    images = {image.platform_id: image for image in job.images.all()}
    assert set(images) == {"twitter-post", "instagram-story"}
    story = images["instagram-story"]
    assert (story.width, story.height, story.format) == (1080, 1920, "jpeg")
    assert story.storage_path == f"alice/{job.generation_id}/instagram-story.jpg"
    assert (media_root / story.storage_path).stat().st_size == story.file_size
    assert job.source_path == f"tmp/alice/{job.generation_id}/original.png"
    assert default_storage.exists(job.source_path)


def test_a_second_run_resumes_from_the_checkpoint_and_redoes_only_missing_platforms(
    alice: Any, media_root: Path
) -> None:
    job = JobFactory(owner=alice, platforms=["twitter-post", "facebook-post"])
    generation.job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    kept = job.images.get(platform_id="twitter-post")
    job.images.filter(platform_id="facebook-post").delete()
    # Mark the checkpoint so that regenerating it would be visible.
    original = media_root / job.source_path
    original.write_bytes(original.read_bytes())
    marker = original.stat().st_mtime_ns
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, progress=60)
    control.job_retry(job=job)
    generation.job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert original.stat().st_mtime_ns == marker  # the original was not made again
    assert job.images.get(platform_id="twitter-post").pk == kept.pk
    assert job.images.filter(platform_id="facebook-post").count() == 1


def test_a_finished_job_is_not_run_again_by_a_duplicate_message(alice: Any) -> None:
    job = JobFactory(owner=alice, platforms=["twitter-post"])
    generation.job_run_generation(job_id=str(job.id))
    generation.job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert job.attempts_made == 1
    assert GeneratedImage.objects.filter(job=job).count() == 1


def test_a_job_held_by_a_live_attempt_is_left_alone(alice: Any) -> None:
    job = JobFactory(owner=alice, platforms=["twitter-post"])
    claim = lease.job_claim(job_id=str(job.id))
    assert claim is not None
    assert lease.job_claim(job_id=str(job.id)) is None


@pytest.mark.django_db(transaction=True)  # a refused fenced write rolls back its transaction
def test_a_stale_attempt_cannot_write_after_another_took_over(alice: Any) -> None:
    job = JobFactory(owner=alice, platforms=["twitter-post"])
    stale = lease.job_claim(job_id=str(job.id))
    assert stale is not None
    Job.objects.filter(pk=job.pk).update(heartbeat_at=None)  # its lease ran out
    fresh = lease.job_claim(job_id=str(job.id))
    assert fresh is not None and fresh.token != stale.token
    with pytest.raises(LeaseLost):
        lease.job_set_progress(stale, 80)
    lease.job_set_progress(fresh, 50)
    job.refresh_from_db()
    assert job.progress == 50


def test_a_cancelled_waiting_job_never_starts(alice: Any) -> None:
    job = JobFactory(owner=alice, platforms=["twitter-post"])
    control.job_cancel(job=job)
    generation.job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.attempts_made == 0
    assert not job.images.exists()


def _running_with_one_of_two_platforms_done(alice: Any) -> tuple[Job, Any]:
    """A job claimed by an attempt that stored its original and one platform of two."""
    job = JobFactory(owner=alice, platforms=["twitter-post", "facebook-post"])
    claim = lease.job_claim(job_id=str(job.id))
    assert claim is not None
    image = decode_image(generation.source_image_bytes(claim))
    rendered = render_platform(image, 1200, 675, "png")
    generation.render_and_store(claim, rendered, "twitter-post", progress=60)
    return job, claim


def test_cancelling_a_running_job_stops_it_and_removes_partial_outputs(
    alice: Any, media_root: Path
) -> None:
    job, claim = _running_with_one_of_two_platforms_done(alice)
    assert job.images.count() == 1
    control.job_cancel(job=job)
    with pytest.raises(JobCancelled):
        lease.check_not_cancelled(claim)
    outputs.job_remove_cancelled_outputs(claim.job, token=claim.token)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert not job.images.exists()
    assert not any(path.is_file() for path in media_root.rglob("*"))


def test_transient_errors_back_off_exponentially_with_jitter(settings: Any) -> None:
    settings.JOB_RETRY_BACKOFF_SECONDS = 2
    settings.JOB_RETRY_BACKOFF_MAX_SECONDS = 300
    for attempt, ceiling in ((1, 2), (2, 4), (3, 8)):
        delays = {
            outcomes.retry_countdown(attempts_made=attempt, retry_after=None) for _ in range(20)
        }
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered
    assert outcomes.retry_countdown(attempts_made=1, retry_after=30) == 30  # Retry-After wins


def test_a_transient_error_delays_the_job_until_attempts_run_out(alice: Any, settings: Any) -> None:
    settings.JOB_MAX_ATTEMPTS = 2
    job = JobFactory(owner=alice)
    claim = lease.job_claim(job_id=str(job.id))
    assert claim is not None
    countdown = outcomes.job_schedule_retry(
        job_id=str(job.id), token=claim.token, reason="Provider timed out", retry_after=None
    )
    job.refresh_from_db()
    assert countdown is not None
    assert job.status == JobStatus.DELAYED
    Job.objects.filter(pk=job.pk).update(retry_at=None)
    claim = lease.job_claim(job_id=str(job.id))
    assert claim is not None
    assert (
        outcomes.job_schedule_retry(
            job_id=str(job.id), token=claim.token, reason="Provider timed out", retry_after=None
        )
        is None
    )
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.failed_reason == "Gave up after 2 attempts: Provider timed out"


def _a_job_with_outputs_then_cancelled_between_attempts(alice: Any) -> Job:
    """Its first attempt rendered one platform of two and stopped on a transient error;
    then it was cancelled while delayed."""
    job, claim = _running_with_one_of_two_platforms_done(alice)
    outcomes.job_schedule_retry(job_id=str(job.id), token=claim.token, reason="5xx", retry_after=0)
    control.job_cancel(job=job)
    return Job.objects.get(pk=job.pk)


def test_a_job_cancelled_between_attempts_has_its_files_removed_by_its_next_delivery(
    alice: Any, media_root: Path
) -> None:
    job = _a_job_with_outputs_then_cancelled_between_attempts(alice)
    assert job.images.exists()
    assert generation.job_run_generation(job_id=str(job.id)) is None  # the delayed message
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.generation_calls == 1
    assert not job.images.exists() and job.source_path == ""
    assert not any(path.is_file() for path in media_root.rglob("*"))


def test_the_sweeper_removes_the_files_of_a_cancelled_job_no_attempt_is_left_to_remove(
    alice: Any, media_root: Path, settings: Any
) -> None:
    from jobs.services.sweeper import jobs_sweep

    settings.JOB_LEASE_SECONDS = 2
    job = _a_job_with_outputs_then_cancelled_between_attempts(alice)
    Job.objects.filter(pk=job.pk).update(finished_at=job.finished_at - timedelta(seconds=10))
    jobs_sweep()
    job.refresh_from_db()
    assert not job.images.exists() and job.source_path == ""
    assert not any(path.is_file() for path in media_root.rglob("*"))


class WorkerKilled(BaseException):
    """Stands in for a SIGKILL: nothing after it runs in that process."""


def test_a_removal_cut_short_by_a_killed_worker_is_finished_by_the_sweeper(
    alice: Any, media_root: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.services.sweeper import jobs_sweep

    settings.JOB_LEASE_SECONDS = 2
    job, claim = _running_with_one_of_two_platforms_done(alice)
    control.job_cancel(job=job)
    # The running attempt sees the cancel and removes its outputs, but its worker is killed
    # after the rows and the first file are gone (seen in the fault campaign, seed 13).
    storage = storages["default"]  # the object behind default_storage's lazy proxy
    delete = storage.delete
    deleted: list[str] = []

    def delete_then_die(name: str) -> None:
        if deleted:
            raise WorkerKilled()
        delete(name)
        deleted.append(name)

    monkeypatch.setattr(storage, "delete", delete_then_die)
    with pytest.raises(WorkerKilled):
        outputs.job_remove_cancelled_outputs(claim.job, token=claim.token)
    monkeypatch.undo()
    job.refresh_from_db()
    assert not job.images.exists() and job.source_path  # still shows it has outputs
    assert any(path.is_file() for path in media_root.rglob("*"))
    # No attempt is left: once its heartbeat is stale, the sweeper finishes the removal.
    old = timezone.now() - timedelta(seconds=10)
    Job.objects.filter(pk=job.pk).update(finished_at=old, heartbeat_at=old)
    jobs_sweep()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.source_path == ""
    assert not any(path.is_file() for path in media_root.rglob("*"))


def test_a_retry_stops_the_removal_of_a_cancelled_jobs_files(alice: Any, media_root: Path) -> None:
    job = _a_job_with_outputs_then_cancelled_between_attempts(alice)
    control.job_retry(job=job)
    assert not outputs.job_remove_cancelled_outputs(job, token=None)
    assert job.images.count() == 1
    assert any(path.is_file() for path in media_root.rglob("*"))


def test_claiming_a_waiting_job_is_one_statement_that_brings_the_owner_name(
    alice: Any, media_root: Path
) -> None:
    job = JobFactory(owner=alice, platforms=["twitter-post"], progress=0)
    with CaptureQueriesContext(connection) as queries:
        claim = lease.job_claim(job_id=str(job.id))
        # The storage paths need the owner's username: it came with the claim.
        assert outputs.storage_prefix(claim.job) == f"alice/{job.generation_id}"
    assert len(queries.captured_queries) == 1
    assert queries.captured_queries[0]["sql"].lstrip().startswith('UPDATE "jobs_job"')
    stored = Job.objects.get(pk=job.pk)
    assert (stored.status, stored.claim_token, stored.attempts_made) == (
        JobStatus.ACTIVE,
        claim.token,
        1,
    )
    assert (stored.progress, claim.job.progress) == (lease.PROGRESS_CLAIMED,) * 2
    assert stored.processed_at == claim.job.processed_at == stored.heartbeat_at


def test_a_stalled_job_is_taken_over_in_one_statement_and_counts_the_stall(alice: Any) -> None:
    token = uuid.uuid4()
    job = JobFactory(
        owner=alice,
        status=JobStatus.ACTIVE,
        claim_token=token,
        attempts_made=1,
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    with CaptureQueriesContext(connection) as queries:
        claim = lease.job_claim(job_id=str(job.id))
    assert len(queries.captured_queries) == 1
    stored = Job.objects.get(pk=job.pk)
    assert (stored.stalled_count, stored.attempts_made, stored.claim_token) == (1, 2, claim.token)


def test_a_job_that_is_not_claimable_as_is_is_decided_under_the_row_lock(alice: Any) -> None:
    held = JobFactory(
        owner=alice, status=JobStatus.ACTIVE, claim_token=uuid.uuid4(), heartbeat_at=timezone.now()
    )
    not_due = JobFactory(
        owner=alice, status=JobStatus.DELAYED, retry_at=timezone.now() + timedelta(minutes=5)
    )
    done = JobFactory(owner=alice, status=JobStatus.COMPLETED)
    for job in (held, not_due, done):
        before = Job.objects.filter(pk=job.pk).values().get()
        assert lease.job_claim(job_id=str(job.id)) is None
        assert Job.objects.filter(pk=job.pk).values().get() == before
    assert lease.job_claim(job_id=str(uuid.uuid4())) is None


def test_the_final_event_lists_the_images_recorded_by_the_run_without_reading_them_back(
    alice: Any, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = JobFactory(owner=alice, platforms=["twitter-post", "instagram-story"])
    finals: list[dict[str, Any]] = []

    def publish(moved: Job, **_: Any) -> None:
        if moved.status == JobStatus.COMPLETED:
            with CaptureQueriesContext(connection) as queries:
                finals.append(job_final_payload(moved))
            assert not queries.captured_queries  # built from the rows in hand

    monkeypatch.setattr(transitions, "publish_job_event", publish)
    generation.job_run_generation(job_id=str(job.id))
    (final,) = finals
    images = final["result"]["images"]
    assert [image["platformId"] for image in images] == ["twitter-post", "instagram-story"]
    stored = {image.platform_id: image for image in GeneratedImage.objects.filter(job=job)}
    for image in images:
        row = stored[image["platformId"]]
        assert (image["width"], image["height"], image["fileSize"], image["storagePath"]) == (
            row.width,
            row.height,
            row.file_size,
            row.storage_path,
        )
    assert final["result"]["totalImages"] == 2


def test_the_final_result_built_from_the_rows_in_hand_is_the_serializers(
    alice: Any, media_root: Path
) -> None:
    job = JobFactory(owner=alice, platforms=["instagram-story", "twitter-post"])
    generation.job_run_generation(job_id=str(job.id))
    fresh = Job.objects.get(pk=job.pk)
    from_serializer = {"result": JobResultBodyField().to_representation(fresh)}
    in_hand = Job.objects.prefetch_related("images").get(pk=job.pk)
    assert job_final_payload(in_hand) == from_serializer
    assert job_final_payload(fresh) == from_serializer
    assert json.dumps(job_final_payload(in_hand)) == json.dumps(from_serializer)
    assert [i["platformId"] for i in from_serializer["result"]["images"]] == [
        "instagram-story",
        "twitter-post",
    ]
