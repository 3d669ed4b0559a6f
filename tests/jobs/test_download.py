"""GET /api/jobs/{jobId}/download.zip: every image of a completed job in one zip."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image
from rest_framework.test import APIClient

from jobs.models import GeneratedImage, Job, JobKind, JobStatus
from jobs.platforms import PLATFORMS
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def completed_job(owner: Any, platforms: list[str]) -> Job:
    job = JobFactory(owner=owner, status=JobStatus.COMPLETED, progress=100, platforms=platforms)
    for platform_id in platforms:
        platform = PLATFORMS[platform_id]
        data = png_bytes(platform.width // 10, platform.height // 10)
        path = default_storage.save(
            f"{owner.username}/{job.generation_id}/{platform_id}.png", ContentFile(data)
        )
        GeneratedImage.objects.create(
            job=job, platform_id=platform_id, width=platform.width, height=platform.height,
            file_size=len(data), storage_path=path, format="png",
        )  # fmt: skip
    return job


def download(client: APIClient, job_id: object) -> Any:
    return client.get(f"/api/jobs/{job_id}/download.zip")


def test_the_owner_downloads_every_image_of_a_completed_job_as_one_zip(
    alice: Any, alice_client: APIClient
) -> None:
    job = completed_job(alice, ["twitter-post", "instagram-story"])

    response = download(alice_client, job.id)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="snapasset-{job.generation_id}.zip"'
    )
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.testzip() is None
    assert archive.namelist() == ["twitter-post-1200x675.png", "instagram-story-1080x1920.png"]
    for image in job.images.all():
        member = next(name for name in archive.namelist() if name.startswith(image.platform_id))
        with default_storage.open(image.storage_path, "rb") as handle:
            assert archive.read(member) == handle.read()


def test_staff_may_download_any_users_zip(alice: Any, staff_client: APIClient) -> None:
    job = completed_job(alice, ["instagram-post"])
    response = download(staff_client, job.id)
    assert response.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist() == [
        "instagram-post-1080x1080.png"
    ]


def test_another_users_zip_is_a_404(alice: Any, bob_client: APIClient) -> None:
    job = completed_job(alice, ["instagram-post"])
    response = download(bob_client, job.id)
    assert response.status_code == 404
    assert response.json() == {"error": "Job not found"}


@pytest.mark.parametrize("job_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_a_missing_job_zip_is_a_404(alice_client: APIClient, job_id: str) -> None:
    assert download(alice_client, job_id).status_code == 404


@pytest.mark.parametrize(
    "status", [JobStatus.WAITING, JobStatus.ACTIVE, JobStatus.FAILED, JobStatus.CANCELLED]
)
def test_a_zip_of_an_unfinished_job_is_a_400_saying_its_status(
    alice: Any, alice_client: APIClient, status: str
) -> None:
    job = JobFactory(owner=alice, status=status)
    response = download(alice_client, job.id)
    assert response.status_code == 400
    assert response.json()["status"] == status
    assert "not completed" in response.json()["error"]


def test_a_cleanup_job_has_no_zip(staff: Any, staff_client: APIClient) -> None:
    job = JobFactory(
        owner=staff, kind=JobKind.FILE_CLEANUP, status=JobStatus.COMPLETED, platforms=[]
    )
    response = download(staff_client, job.id)
    assert response.status_code == 400


def test_the_zip_needs_credentials(anon_client: APIClient, alice: Any) -> None:
    job = completed_job(alice, ["instagram-post"])
    assert download(anon_client, job.id).status_code == 401


def test_a_zip_of_files_no_longer_in_storage_is_410_before_any_byte(alice: Any) -> None:
    from tests.conftest import client_for

    job = JobFactory(owner=alice, status=JobStatus.COMPLETED, platforms=["twitter-post"])
    GeneratedImage.objects.create(
        job=job, platform_id="twitter-post", width=1200, height=675, file_size=10,
        storage_path=f"alice/{job.generation_id}/twitter-post.png", format="png",
    )  # fmt: skip
    client: APIClient = client_for(alice)
    response = client.get(f"/api/jobs/{job.id}/download.zip")
    assert response.status_code == 410
    assert "no longer in storage" in response.json()["error"]
