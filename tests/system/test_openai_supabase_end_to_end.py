"""End to end on the production path: a real uvicorn and a real Celery worker process, the
official openai and supabase clients pointed at the loopback fakes (IMAGE_PROVIDER=openai,
OPENAI_BASE_URL, SUPABASE_URL), files landing in the fake bucket."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import httpx
import pytest
from PIL import Image

from jobs.platforms import PLATFORMS
from tests.conftest import make_user
from tests.fakes.fixtures import BUCKET, openai_env, supabase_env
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.supabase_server import FakeSupabase
from tests.system.test_end_to_end import poll_until_finished

pytestmark = pytest.mark.e2e


def start_stack(
    start_worker: Any, start_web: Any, openai: FakeOpenAI, supabase: FakeSupabase
) -> tuple[str, dict[str, str]]:
    from tests.conftest import api_key_for

    token = api_key_for(make_user("alice"))
    env = {**openai_env(openai), **supabase_env(supabase), "JOB_RETRY_BACKOFF_SECONDS": "1"}
    start_worker(env=env)
    return start_web(env=env), {"Authorization": f"Bearer {token}"}


def submit(base: str, headers: dict[str, str], body: dict[str, Any]) -> str:
    response = httpx.post(f"{base}/api/jobs/generate", json=body, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["jobId"])


def test_a_job_completes_with_openai_and_supabase_through_a_worker_process(
    start_worker: Any, start_web: Any, fake_openai: FakeOpenAI, fake_supabase: FakeSupabase
) -> None:
    base, headers = start_stack(start_worker, start_web, fake_openai, fake_supabase)
    job_id = submit(base, headers, {"prompt": "A lighthouse at dusk", "imageType": "natural"})

    body = poll_until_finished(base, headers, job_id)
    assert body["status"] == "completed", body
    assert body["attemptsMade"] == 1
    assert len(fake_openai.generation_calls) == 1
    assert "natural" in fake_openai.generation_calls[0].json()["prompt"].lower()

    result = httpx.get(f"{base}/api/jobs/{job_id}/result", headers=headers, timeout=10).json()[
        "result"
    ]
    generation_id = result["generationId"]
    assert [image["platformId"] for image in result["images"]] == list(PLATFORMS)
    expected_files = {f"alice/{generation_id}/{platform}.png" for platform in PLATFORMS}
    assert expected_files | {f"tmp/alice/{generation_id}/original.png"} == set(
        fake_supabase.names()
    )
    for image in result["images"]:
        assert (
            image["url"]
            == f"{fake_supabase.url}/storage/v1/object/public/{BUCKET}/{image['storagePath']}"
        )
        assert image["storagePath"] in expected_files and image["format"] == "png"
        response = httpx.get(image["url"], timeout=10)  # anonymous: a public URL
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert len(response.content) == image["fileSize"]
        with Image.open(io.BytesIO(response.content)) as picture:
            platform = PLATFORMS[image["platformId"]]
            assert picture.size == (platform.width, platform.height)


def test_storage_failing_once_after_generation_retries_and_never_pays_twice(
    start_worker: Any, start_web: Any, fake_openai: FakeOpenAI, fake_supabase: FakeSupabase
) -> None:
    base, headers = start_stack(start_worker, start_web, fake_openai, fake_supabase)
    fake_supabase.fail("POST", "/twitter-post.jpg", status=503)
    platforms = ["instagram-post", "twitter-post", "linkedin-post"]
    job_id = submit(
        base, headers, {"prompt": "Never twice", "platforms": platforms, "format": "jpeg"}
    )

    body = poll_until_finished(base, headers, job_id)
    assert body["status"] == "completed", body
    assert body["attemptsMade"] == 2  # the 503 made the job retry
    assert len(fake_openai.generation_calls) == 1

    posts = Counter(
        r.path.rsplit("/", 1)[-1]
        for r in fake_supabase.seen("POST", f"/storage/v1/object/{BUCKET}/")
    )
    assert posts == Counter(
        {"original.png": 1, "instagram-post.jpg": 1, "twitter-post.jpg": 2, "linkedin-post.jpg": 1}
    )
    result = httpx.get(f"{base}/api/jobs/{job_id}/result", headers=headers, timeout=10).json()[
        "result"
    ]
    for image in result["images"]:
        response = httpx.get(image["url"], timeout=10)
        assert response.headers["content-type"] == "image/jpeg"
        assert len(response.content) == image["fileSize"] and image["format"] == "jpeg"
