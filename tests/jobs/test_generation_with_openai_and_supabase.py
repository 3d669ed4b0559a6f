"""The generation service with the OpenAI provider and Supabase storage, both on their fakes:
error paths, the checkpoint of the original and per-platform resume."""

from __future__ import annotations

import io
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from PIL import Image

from jobs.models import Job, JobStatus
from jobs.serializers import ImageJobResultSerializer
from jobs.services.generation import job_run_generation
from jobs.services.outputs import source_path
from tests.conftest import client_for
from tests.factories import JobFactory, UserFactory
from tests.fakes.fixtures import BUCKET
from tests.fakes.openai_server import API_KEY, FakeOpenAI
from tests.fakes.supabase_server import FakeSupabase

pytestmark = pytest.mark.django_db

PLATFORMS = ["instagram-post", "twitter-post", "facebook-post"]


def make_job(**fields: Any) -> Job:
    fields.setdefault("platforms", PLATFORMS)
    return JobFactory(owner=UserFactory(username="alice"), **fields)


def post_counts(fake: FakeSupabase) -> Counter[str]:
    prefix = f"/storage/v1/object/{BUCKET}/"
    return Counter(r.path.removeprefix(prefix).split("/")[-1] for r in fake.seen("POST", prefix))


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1024), "crimson").save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture
def fast_retries(settings: Any) -> None:
    settings.JOB_RETRY_BACKOFF_SECONDS = 0


# --- Error paths ----------------------------------------------------------------------------------


def test_a_429_leaves_the_job_delayed_no_sooner_than_retry_after(
    use_fake_openai: FakeOpenAI,
) -> None:
    use_fake_openai.rate_limit(retry_after="7")
    job = make_job()
    countdown = job_run_generation(job_id=str(job.id))
    assert countdown is not None and countdown >= 7
    job.refresh_from_db()
    assert job.status == JobStatus.DELAYED
    assert job.retry_at is not None and job.retry_at >= timezone.now() + timedelta(seconds=6)
    assert "rate limited" in job.failed_reason


def test_a_content_policy_refusal_fails_the_job_at_once_with_a_readable_reason(
    use_fake_openai: FakeOpenAI,
) -> None:
    use_fake_openai.reject_content()
    job = make_job()
    assert job_run_generation(job_id=str(job.id)) is None
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts_made == 1
    assert job.failed_reason.startswith(
        "The prompt was rejected by the image model's content policy"
    )
    assert "req_" not in job.failed_reason and "safety_violations" not in job.failed_reason


def test_an_invalid_key_fails_the_job_at_once_without_showing_the_key(
    use_fake_openai: FakeOpenAI, settings: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-not-the-right-key-5678"
    job = make_job()
    job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "OPENAI_API_KEY" in job.failed_reason and "5678" not in job.failed_reason
    assert API_KEY not in job.failed_reason


def test_a_storage_refusal_fails_the_job_at_once(
    use_fake_openai: FakeOpenAI, use_fake_supabase: FakeSupabase, settings: Any
) -> None:
    settings.SUPABASE_BUCKET = "missing-bucket"
    job = make_job()
    job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.failed_reason == "File storage refused to save a file (404 Bucket not found)"


# --- The checkpoint -------------------------------------------------------------------------------


def test_the_original_and_outputs_are_stored_with_their_real_content_types(
    use_fake_openai: FakeOpenAI, use_fake_supabase: FakeSupabase
) -> None:
    use_fake_openai.queue_b64(jpeg_bytes())  # a compatible server answering JPEG
    job = make_job(output_format="webp")
    job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert (
        job.source_path == source_path(job, "jpeg") == f"tmp/alice/{job.generation_id}/original.jpg"
    )
    assert use_fake_supabase.get(job.source_path).content_type == "image/jpeg"
    for image in job.images.all():
        stored = use_fake_supabase.get(image.storage_path)
        assert image.storage_path == f"alice/{job.generation_id}/{image.platform_id}.webp"
        assert stored.content_type == "image/webp" and image.format == "webp"
        assert image.file_size == len(stored.data)
        assert stored.cache_control == "max-age=31536000"
        assert (
            image.url
            == f"{use_fake_supabase.url}/storage/v1/object/public/{BUCKET}/{image.storage_path}"
        )


def test_storage_failing_once_on_the_original_is_retried_in_place(
    use_fake_openai: FakeOpenAI, use_fake_supabase: FakeSupabase
) -> None:
    use_fake_supabase.fail("POST", "/original.png", status=503)
    job = make_job()
    assert job_run_generation(job_id=str(job.id)) is None
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.attempts_made == 1
    assert len(use_fake_openai.generation_calls) == 1
    assert post_counts(use_fake_supabase)["original.png"] == 2


def test_storage_failing_after_generation_retries_without_paying_the_model_again(
    use_fake_openai: FakeOpenAI, use_fake_supabase: FakeSupabase, fast_retries: None
) -> None:
    use_fake_supabase.fail("POST", "/twitter-post.png", status=503)
    job = make_job()
    countdown = job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert countdown is not None and job.status == JobStatus.DELAYED
    assert list(job.images.values_list("platform_id", flat=True)) == ["instagram-post"]
    assert job.source_path

    assert job_run_generation(job_id=str(job.id)) is None
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.attempts_made == 2
    assert len(use_fake_openai.generation_calls) == 1
    # The original and the platform done before the failure were stored once; only the
    # missing platforms were redone.
    assert post_counts(use_fake_supabase) == Counter(
        {"original.png": 1, "instagram-post.png": 1, "twitter-post.png": 2, "facebook-post.png": 1}
    )
    assert sorted(job.images.values_list("platform_id", flat=True)) == sorted(PLATFORMS)


def test_a_redelivery_finds_an_original_stored_but_not_recorded(
    use_fake_openai: FakeOpenAI, use_fake_supabase: FakeSupabase
) -> None:
    """An attempt that stored the original and died before recording it: the next one
    finds it in the job's tmp folder instead of generating again."""
    job = make_job(attempts_made=1, status=JobStatus.WAITING)
    use_fake_supabase.put(BUCKET, source_path(job), use_fake_openai.default_image)
    job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert use_fake_openai.generation_calls == []
    assert job.source_path == source_path(job)


def test_a_vanished_checkpoint_is_generated_again(
    use_fake_openai: FakeOpenAI, use_fake_supabase: FakeSupabase
) -> None:
    job = make_job(source_path="tmp/alice/gone/original.png")
    job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert len(use_fake_openai.generation_calls) == 1
    assert job.source_path == source_path(job)


@pytest.fixture
def completed_with_signed_urls(
    use_fake_openai: FakeOpenAI, use_fake_supabase: FakeSupabase, settings: Any
) -> Job:
    """A one-platform job generated with Supabase handing out signed URLs."""
    settings.SUPABASE_SIGNED_URLS = True
    job = make_job(platforms=["twitter-post"])
    job_run_generation(job_id=str(job.id))
    job.refresh_from_db()
    return job


def test_with_signed_urls_results_carry_fresh_signed_urls(
    completed_with_signed_urls: Job, use_fake_supabase: FakeSupabase
) -> None:
    job = completed_with_signed_urls
    image = job.images.get()
    assert image.url == ""  # an expiring URL is never stored
    url = ImageJobResultSerializer(job).data["images"][0]["url"]
    assert url.startswith(
        f"{use_fake_supabase.url}/storage/v1/object/sign/{BUCKET}/{image.storage_path}?token="
    )


def test_with_signed_urls_a_storage_outage_answers_the_result_with_a_503_not_a_500(
    completed_with_signed_urls: Job, use_fake_supabase: FakeSupabase
) -> None:
    job = completed_with_signed_urls
    use_fake_supabase.fail("POST", "/object/sign/", status=503, headers={"Retry-After": "7"})

    response = client_for(job.owner).get(f"/api/jobs/{job.id}/result")

    assert response.status_code == 503
    assert response.json() == {"error": "Storage is unavailable; try again shortly"}
    assert response["Retry-After"] == "7"
    # Once storage answers again, so does the result.
    assert client_for(job.owner).get(f"/api/jobs/{job.id}/result").status_code == 200
