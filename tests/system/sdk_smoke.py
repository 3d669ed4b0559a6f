"""What an API consumer does with the Python client generated from our schema
(openapi-python-client): health, platforms, submit, poll, result, zip, list with a status
filter, a batch, and the errors (400 with its body, 404). Run by tests/system/test_client_sdk.py
against a live server, with the generated package on PYTHONPATH:

    python tests/system/sdk_smoke.py BASE_URL API_TOKEN

Every call runs with ``raise_on_unexpected_status``: an answer the schema does not document
fails the script, as it would fail a consumer's code.
"""

from __future__ import annotations

import io
import sys
import time
import uuid
import zipfile

from snapasset_client import AuthenticatedClient, Client
from snapasset_client.api.health import health
from snapasset_client.api.jobs import (
    jobs_download_zip,
    jobs_generate,
    jobs_generate_batch,
    jobs_list,
    jobs_result,
    jobs_retrieve,
)
from snapasset_client.api.platforms import platforms_list
from snapasset_client.models import (
    Error,
    HealthStatusEnum,
    ImageFormatEnum,
    ImageJobResult,
    JobBatchSubmitted,
    JobDetail,
    JobGenerateInput,
    JobList,
    JobResult,
    JobStatusEnum,
    JobSubmitted,
    PlatformIdEnum,
    PlatformList,
    QueuedStatusEnum,
    ServiceStatusEnum,
)

PLATFORMS = [PlatformIdEnum.TWITTER_POST, PlatformIdEnum.INSTAGRAM_POST]


def step(message: str) -> None:
    print(f"- {message}", flush=True)


def wait_finished(client: AuthenticatedClient, job_id: uuid.UUID) -> JobDetail:
    deadline = time.monotonic() + 90
    while True:
        detail = jobs_retrieve.sync(client=client, job_id=job_id)
        assert isinstance(detail, JobDetail), detail
        if detail.status in (JobStatusEnum.COMPLETED, JobStatusEnum.FAILED):
            return detail
        assert time.monotonic() < deadline, f"still {detail.status} after 90 s"
        time.sleep(0.3)


def main(base_url: str, token: str) -> None:
    public = Client(base_url=base_url, raise_on_unexpected_status=True)
    client = AuthenticatedClient(
        base_url=base_url, token=token, prefix="Token", raise_on_unexpected_status=True
    )

    status = health.sync(client=public)
    assert status is not None and status.status == HealthStatusEnum.OK, status
    assert status.services.database.status == ServiceStatusEnum.UP
    assert status.down == []
    step("health: ok")

    platforms = platforms_list.sync(client=client)
    assert isinstance(platforms, PlatformList)
    assert {p.id for p in platforms.platforms} >= set(PLATFORMS)
    step(f"platforms: {len(platforms.platforms)}")

    submitted = jobs_generate.sync_detailed(
        client=client,
        body=JobGenerateInput(
            prompt="A lighthouse at dawn, from the SDK",
            platforms=PLATFORMS,
            format_=ImageFormatEnum.PNG,
        ),
    )
    assert submitted.status_code == 202, submitted
    job = submitted.parsed
    assert isinstance(job, JobSubmitted) and job.status == QueuedStatusEnum.QUEUED
    step(f"submitted {job.job_id}")

    detail = wait_finished(client, job.job_id)
    assert detail.status == JobStatusEnum.COMPLETED, detail.failed_reason
    assert detail.progress == 100
    step(f"polled: {detail.status.value}")

    result = jobs_result.sync(client=client, job_id=job.job_id)
    assert isinstance(result, JobResult) and isinstance(result.result, ImageJobResult)
    images = result.result.images
    assert [image.platform_id for image in images] == PLATFORMS
    assert all(image.format_ == ImageFormatEnum.PNG and image.file_size > 0 for image in images)
    assert result.result.total_images == 2
    step(f"result: {[(i.platform_id.value, i.width, i.height) for i in images]}")

    download = jobs_download_zip.sync_detailed(client=client, job_id=job.job_id)
    assert download.status_code == 200 and download.parsed is not None
    payload = download.parsed.payload.read()  # type: ignore[union-attr]
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        assert archive.testzip() is None
        names = sorted(archive.namelist())
    assert len(names) == 2 and all(name.endswith(".png") for name in names), names
    step(f"zip: {names}")

    listed = jobs_list.sync(
        client=client, status=[JobStatusEnum.COMPLETED, JobStatusEnum.FAILED], limit=5
    )
    assert isinstance(listed, JobList)
    assert [j.job_id for j in listed.jobs] == [job.job_id]
    assert set(listed.statuses) == {JobStatusEnum.COMPLETED, JobStatusEnum.FAILED}
    waiting = jobs_list.sync(client=client, status=[JobStatusEnum.WAITING])
    assert isinstance(waiting, JobList) and waiting.total == 0
    step("list with a status filter")

    batch = jobs_generate_batch.sync_detailed(
        client=client,
        body=[
            JobGenerateInput(
                prompt="A kite, from a batch", platforms=[PlatformIdEnum.TWITTER_POST]
            ),
            JobGenerateInput(prompt="   "),
        ],
    )
    assert batch.status_code == 200 and isinstance(batch.parsed, JobBatchSubmitted), batch
    assert (batch.parsed.accepted, batch.parsed.rejected) == (1, 1)
    queued, refused = batch.parsed.results
    assert (queued.index, queued.status, refused.index, refused.status) == (0, 202, 1, 400)
    assert isinstance(queued.job, JobSubmitted) and queued.job.status == QueuedStatusEnum.QUEUED
    assert isinstance(refused.error, Error)
    assert "prompt" in refused.error.details.additional_properties, refused.error
    batched = wait_finished(client, queued.job.job_id)
    assert batched.status == JobStatusEnum.COMPLETED, batched.failed_reason
    step(f"batch: {queued.job.job_id} completed, item 1 refused {refused.error.error!r}")

    invalid = jobs_generate.sync_detailed(client=client, body=JobGenerateInput(prompt="   "))
    assert invalid.status_code == 400 and isinstance(invalid.parsed, Error), invalid
    assert "prompt" in invalid.parsed.details.additional_properties, invalid.parsed
    missing = jobs_retrieve.sync_detailed(client=client, job_id=uuid.uuid4())
    assert missing.status_code == 404 and isinstance(missing.parsed, Error)
    assert missing.parsed.error
    step(f"errors: 400 {invalid.parsed.error!r}, 404 {missing.parsed.error!r}")
    print("SDK smoke: OK")


if __name__ == "__main__":
    main(*sys.argv[1:3])
