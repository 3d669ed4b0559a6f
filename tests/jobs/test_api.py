"""The HTTP contract of docs/API.md, endpoint by endpoint: shapes, status codes, auth, ownership."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import GeneratedImage, Job, JobKind, JobStatus
from jobs.platforms import PLATFORM_IDS
from tests.conftest import api_key_for, client_for
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

GENERATE = "/api/jobs/generate"


def submit(client: APIClient, body: Any = None, **headers: str) -> Any:
    return client.post(
        GENERATE, body if body is not None else {"prompt": "A red fox"}, format="json", **headers
    )


# --- Credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", GENERATE),
        ("get", "/api/jobs"),
        ("get", "/api/jobs/stats/overview"),
        ("post", "/api/jobs/cleanup"),
        ("get", "/api/jobs/00000000-0000-0000-0000-000000000000"),
        ("get", "/api/jobs/00000000-0000-0000-0000-000000000000/result"),
        ("post", "/api/jobs/00000000-0000-0000-0000-000000000000/retry"),
        ("delete", "/api/jobs/00000000-0000-0000-0000-000000000000"),
        ("get", "/api/platforms"),
    ],
)
def test_every_api_endpoint_needs_credentials(
    anon_client: APIClient, method: str, path: str
) -> None:
    response = getattr(anon_client, method)(path)
    assert response.status_code == 401
    assert "error" in response.json()


def test_it_accepts_token_and_bearer_keywords(alice: Any) -> None:
    key = api_key_for(alice)
    for keyword in ("Token", "Bearer"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")
        assert client.get("/api/jobs").status_code == 200


def test_a_wrong_token_is_refused(anon_client: APIClient) -> None:
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-real-token")
    response = anon_client.get("/api/jobs")
    assert response.status_code == 401
    assert response.json()["error"] == "Invalid token."


def test_create_api_token_creates_the_user_and_prints_a_new_key_last(capsys: Any) -> None:
    def create(*args: str) -> APIClient:
        call_command("create_api_token", *args)
        client = APIClient()
        key = capsys.readouterr().out.strip().splitlines()[-1]
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    first = create("carol", "--staff")
    carol = get_user_model().objects.get(username="carol")
    assert carol.is_staff
    assert first.get("/api/jobs").status_code == 200
    # Keys cannot be shown again: each call makes another, and the older ones keep working.
    second = create("carol")
    assert second.get("/api/jobs").status_code == 200
    assert first.get("/api/jobs").status_code == 200
    # --rotate revokes the older ones.
    third = create("carol", "--rotate")
    assert third.get("/api/jobs").status_code == 200
    assert first.get("/api/jobs").status_code == 401
    assert second.get("/api/jobs").status_code == 401


# --- POST /api/jobs/generate -------------------------------------------------------------------


def test_submit_answers_202_with_the_job(alice_client: APIClient, alice: Any) -> None:
    response = submit(
        alice_client,
        {
            "prompt": "  A red fox  ",
            "platforms": ["twitter-post"],
            "imageType": "natural",
            "priority": 5,
        },
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"jobId", "generationId", "status", "message", "estimatedTime"}
    assert body["status"] == "queued"
    job = Job.objects.get(pk=body["jobId"])
    assert job.owner == alice
    assert job.prompt == "A red fox"
    assert job.platforms == ["twitter-post"]
    assert job.image_type == "natural"
    assert job.priority == 5
    assert job.status == JobStatus.WAITING
    assert str(job.generation_id) == body["generationId"]


def test_submit_defaults_to_every_platform_vivid_png(alice_client: APIClient) -> None:
    job = Job.objects.get(pk=submit(alice_client).json()["jobId"])
    assert job.platforms == list(PLATFORM_IDS)
    assert (job.image_type, job.output_format, job.priority) == ("vivid", "png", 0)


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": ["a"]}, "prompt"),
        ({"prompt": "ok", "platforms": ["myspace"]}, "platforms"),
        ({"prompt": "ok", "platforms": []}, "platforms"),
        ({"prompt": "ok", "platforms": "twitter-post"}, "platforms"),
        ({"prompt": "ok", "platforms": ["twitter-post", "twitter-post"]}, "platforms"),
        ({"prompt": "ok", "imageType": "sepia"}, "imageType"),
        ({"prompt": "ok", "format": "gif"}, "format"),
        ({"prompt": "ok", "priority": "high"}, "priority"),
        ({"prompt": "ok", "priority": 10}, "priority"),
        ({"prompt": "ok", "priority": -1}, "priority"),
        ({"prompt": "ok", "priority": True}, "priority"),
        ({"prompt": "ok", "platfroms": ["twitter-post"]}, "platfroms"),
    ],
)
def test_submit_refuses_invalid_bodies_saying_which_field(
    alice_client: APIClient, body: dict[str, Any], field: str
) -> None:
    response = submit(alice_client, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"]
    assert field in payload["details"]
    assert not Job.objects.exists()


def test_submit_accepts_a_prompt_of_exactly_4000_characters(alice_client: APIClient) -> None:
    assert submit(alice_client, {"prompt": "x" * 4000}).status_code == 202


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"a string"', b"null"])
def test_submit_refuses_malformed_or_non_object_json(alice_client: APIClient, raw: bytes) -> None:
    response = alice_client.post(GENERATE, raw, content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_submit_refuses_a_body_over_one_mebibyte_with_413(alice_client: APIClient) -> None:
    response = alice_client.post(
        GENERATE, b'{"prompt": "' + b"x" * (1024 * 1024) + b'"}', content_type="application/json"
    )
    assert response.status_code == 413
    assert "error" in response.json()


def test_submit_refuses_another_users_id_for_a_non_staff_caller_with_403(
    alice_client: APIClient, bob: Any
) -> None:
    response = submit(alice_client, {"prompt": "ok", "userId": "bob"})
    assert response.status_code == 403  # API.md, Credentials
    assert "userId" in response.json()["details"]
    assert not Job.objects.exists()


def test_submit_accepts_the_callers_own_user_id(alice_client: APIClient, alice: Any) -> None:
    assert submit(alice_client, {"prompt": "ok", "userId": "alice"}).status_code == 202


def test_staff_may_submit_for_another_user(staff_client: APIClient, bob: Any) -> None:
    response = submit(staff_client, {"prompt": "ok", "userId": "bob"})
    assert response.status_code == 202
    assert Job.objects.get(pk=response.json()["jobId"]).owner == bob


def test_the_same_idempotency_key_returns_the_first_job(alice_client: APIClient) -> None:
    first = submit(alice_client, HTTP_IDEMPOTENCY_KEY="order-17")
    again = submit(alice_client, HTTP_IDEMPOTENCY_KEY="order-17")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["jobId"] == first.json()["jobId"]
    assert Job.objects.count() == 1


def test_an_idempotency_key_is_per_user(alice_client: APIClient, bob_client: APIClient) -> None:
    a = submit(alice_client, HTTP_IDEMPOTENCY_KEY="k")
    b = submit(bob_client, HTTP_IDEMPOTENCY_KEY="k")
    assert a.json()["jobId"] != b.json()["jobId"]


def test_an_idempotency_key_expires_after_24_hours(alice_client: APIClient) -> None:
    first = submit(alice_client, HTTP_IDEMPOTENCY_KEY="k").json()["jobId"]
    Job.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(hours=25))
    second = submit(alice_client, HTTP_IDEMPOTENCY_KEY="k")
    assert second.status_code == 202
    assert second.json()["jobId"] != first


def test_an_idempotency_key_reused_for_a_different_request_is_refused(
    alice_client: APIClient,
) -> None:
    submit(alice_client, {"prompt": "one"}, HTTP_IDEMPOTENCY_KEY="k")
    response = submit(alice_client, {"prompt": "two"}, HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["details"]


def test_a_user_over_the_pending_cap_gets_429(
    alice_client: APIClient, alice: Any, settings: Any
) -> None:
    settings.JOB_MAX_PENDING_PER_USER = 2
    JobFactory.create_batch(2, owner=alice, status=JobStatus.WAITING)
    response = submit(alice_client)
    assert response.status_code == 429
    assert "limit" in response.json()["error"]


# --- GET /api/jobs/{id} ------------------------------------------------------------------------


def test_job_detail_has_the_contract_shape(alice_client: APIClient) -> None:
    job_id = submit(alice_client, {"prompt": "A fox", "platforms": ["twitter-post"]}).json()[
        "jobId"
    ]
    body = alice_client.get(f"/api/jobs/{job_id}").json()
    assert {
        "jobId",
        "queue",
        "status",
        "progress",
        "data",
        "attemptsMade",
        "processedOn",
        "finishedOn",
        "failedReason",
    } <= set(body)
    assert body["queue"] == "image-generation"
    assert body["status"] == "waiting"
    assert body["progress"] == 0
    assert body["attemptsMade"] == 0
    assert body["processedOn"] is None and body["finishedOn"] is None
    assert {"userId", "generationId", "prompt", "platforms", "imageType"} <= set(body["data"])
    assert body["data"]["userId"] == "alice"
    assert body["data"]["platforms"] == ["twitter-post"]
    assert isinstance(body["timestamp"], int)


def test_another_users_job_is_404_not_403(alice_client: APIClient, bob_client: APIClient) -> None:
    job_id = submit(alice_client).json()["jobId"]
    for response in (
        bob_client.get(f"/api/jobs/{job_id}"),
        bob_client.get(f"/api/jobs/{job_id}/result"),
        bob_client.post(f"/api/jobs/{job_id}/retry"),
        bob_client.delete(f"/api/jobs/{job_id}"),
    ):
        assert response.status_code == 404
        assert response.json() == {"error": "Job not found"}
    assert Job.objects.get(pk=job_id).status == JobStatus.WAITING


def test_staff_see_every_users_job(alice_client: APIClient, staff_client: APIClient) -> None:
    job_id = submit(alice_client).json()["jobId"]
    assert staff_client.get(f"/api/jobs/{job_id}").status_code == 200


@pytest.mark.parametrize("job_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-000000000000"])
def test_unknown_or_malformed_job_ids_are_404(alice_client: APIClient, job_id: str) -> None:
    response = alice_client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 404
    assert response.json()["error"] == "Job not found"


# --- Result ---------------------------------------------------------------------------------


def test_result_of_an_unfinished_job_is_400_with_its_status(alice_client: APIClient) -> None:
    job_id = submit(alice_client).json()["jobId"]
    response = alice_client.get(f"/api/jobs/{job_id}/result")
    assert response.status_code == 400
    assert response.json()["status"] == "waiting"
    assert "error" in response.json()


def test_result_lists_each_image_with_an_absolute_url(alice_client: APIClient, alice: Any) -> None:
    job = JobFactory(
        owner=alice, status=JobStatus.COMPLETED, platforms=["twitter-post", "instagram-post"]
    )
    for platform_id, (w, h) in (("instagram-post", (1080, 1080)), ("twitter-post", (1200, 675))):
        GeneratedImage.objects.create(
            job=job, platform_id=platform_id, width=w, height=h, file_size=1234,
            storage_path=f"alice/{job.generation_id}/{platform_id}.png",
            url=f"/media/alice/{job.generation_id}/{platform_id}.png", format="png",
        )  # fmt: skip
    body = alice_client.get(f"/api/jobs/{job.id}/result").json()
    assert body["status"] == "completed"
    result = body["result"]
    assert result["success"] is True
    assert result["totalImages"] == 2
    assert [image["platformId"] for image in result["images"]] == ["twitter-post", "instagram-post"]
    image = result["images"][0]
    assert set(image) == {
        "platformId",
        "platformName",
        "width",
        "height",
        "fileSize",
        "storagePath",
        "url",
        "format",
    }
    assert image["platformName"] == "Twitter Post"
    assert (image["width"], image["height"]) == (1200, 675)
    assert image["url"].startswith("http://testserver/media/alice/")


# --- Retry and cancel --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_retry_of_a_failed_or_cancelled_job_puts_it_back_in_the_queue(
    alice_client: APIClient, alice: Any, status: str
) -> None:
    job = JobFactory(owner=alice, status=status, failed_reason="boom", attempts_made=3, progress=40)
    response = alice_client.post(f"/api/jobs/{job.id}/retry")
    assert response.status_code == 200
    assert response.json()["jobId"] == str(job.id)
    assert response.json()["status"] == "retrying"
    job.refresh_from_db()
    assert (job.status, job.failed_reason, job.progress, job.attempts_made) == ("waiting", "", 0, 0)


@pytest.mark.parametrize("status", [JobStatus.WAITING, JobStatus.ACTIVE, JobStatus.COMPLETED])
def test_retry_of_a_job_that_did_not_fail_is_400(
    alice_client: APIClient, alice: Any, status: str
) -> None:
    job = JobFactory(owner=alice, status=status)
    response = alice_client.post(f"/api/jobs/{job.id}/retry")
    assert response.status_code == 400
    assert response.json()["status"] == status


@pytest.mark.parametrize("status", [JobStatus.WAITING, JobStatus.DELAYED, JobStatus.ACTIVE])
def test_cancel_of_a_pending_job_answers_cancelled(
    alice_client: APIClient, alice: Any, status: str
) -> None:
    job = JobFactory(owner=alice, status=status)
    response = alice_client.delete(f"/api/jobs/{job.id}")
    assert response.status_code == 200
    assert response.json()["jobId"] == str(job.id)
    assert response.json()["status"] == "cancelled"
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.cancel_requested


def test_cancel_of_a_completed_job_is_400(alice_client: APIClient, alice: Any) -> None:
    job = JobFactory(owner=alice, status=JobStatus.COMPLETED)
    response = alice_client.delete(f"/api/jobs/{job.id}")
    assert response.status_code == 400
    assert response.json()["status"] == "completed"


def test_cancel_twice_is_harmless(alice_client: APIClient, alice: Any) -> None:
    job = JobFactory(owner=alice)
    assert alice_client.delete(f"/api/jobs/{job.id}").status_code == 200
    assert alice_client.delete(f"/api/jobs/{job.id}").status_code == 200


# --- List and stats ----------------------------------------------------------------------------


def test_list_shows_own_jobs_newest_first_with_total(
    alice_client: APIClient, alice: Any, bob: Any
) -> None:
    now = timezone.now()
    jobs = [JobFactory(owner=alice) for _ in range(3)]
    for age, job in enumerate(reversed(jobs)):
        Job.objects.filter(pk=job.pk).update(created_at=now - timedelta(minutes=age))
    JobFactory(owner=bob)
    body = alice_client.get("/api/jobs?limit=2").json()
    assert body["total"] == 3
    assert [j["jobId"] for j in body["jobs"]] == [str(jobs[2].id), str(jobs[1].id)]
    assert set(body["jobs"][0]) >= {"jobId", "status", "data", "progress", "timestamp"}


def test_list_filters_by_status(alice_client: APIClient, alice: Any) -> None:
    JobFactory(owner=alice, status=JobStatus.WAITING)
    JobFactory(owner=alice, status=JobStatus.ACTIVE)
    JobFactory(owner=alice, status=JobStatus.COMPLETED)
    body = alice_client.get("/api/jobs?status=waiting,active&limit=10").json()
    assert body["total"] == 2
    assert body["statuses"] == ["waiting", "active"]
    assert {j["status"] for j in body["jobs"]} == {"waiting", "active"}


@pytest.mark.parametrize(
    "query",
    ["status=running", "status=waiting,nope", "limit=0", "limit=abc", "offset=-1"],
)
def test_list_refuses_bad_query_parameters(alice_client: APIClient, query: str) -> None:
    response = alice_client.get(f"/api/jobs?{query}")
    assert response.status_code == 400
    assert response.json()["details"]


@pytest.mark.parametrize("extra", ["_=1733000000", "colour=red", "utm_source=mail&_=1"])
def test_list_ignores_unknown_query_parameters(
    alice_client: APIClient, alice: Any, extra: str
) -> None:
    JobFactory(owner=alice, status=JobStatus.WAITING)
    JobFactory(owner=alice, status=JobStatus.COMPLETED)
    response = alice_client.get(f"/api/jobs?status=waiting&{extra}")
    assert response.status_code == 200
    assert response.json()["total"] == 1


def test_list_caps_the_limit(alice_client: APIClient) -> None:
    assert alice_client.get("/api/jobs?limit=100000").json()["limit"] == 100


def test_staff_list_every_users_jobs(staff_client: APIClient, alice: Any, bob: Any) -> None:
    JobFactory(owner=alice)
    JobFactory(owner=bob)
    assert staff_client.get("/api/jobs").json()["total"] == 2


def test_stats_count_jobs_per_kind_and_status(
    alice_client: APIClient, staff_client: APIClient, alice: Any, bob: Any
) -> None:
    JobFactory(owner=alice, status=JobStatus.COMPLETED)
    JobFactory(owner=alice, status=JobStatus.FAILED)
    JobFactory(owner=bob, status=JobStatus.WAITING)
    JobFactory(owner=bob, kind=JobKind.FILE_CLEANUP, status=JobStatus.ACTIVE)
    mine = alice_client.get("/api/jobs/stats/overview").json()
    assert mine["imageGeneration"] == {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    everyone = staff_client.get("/api/jobs/stats/overview").json()
    assert everyone["imageGeneration"]["waiting"] == 1
    assert everyone["fileCleanup"]["active"] == 1
    assert isinstance(everyone["timestamp"], int)


# --- Platforms ----------------------------------------------------------------------------


def test_platforms_lists_ids_names_and_sizes(alice_client: APIClient) -> None:
    platforms = alice_client.get("/api/platforms").json()["platforms"]
    assert {"id": "twitter-post", "name": "Twitter Post", "width": 1200, "height": 675} in platforms
    assert len(platforms) == 6


def test_unknown_api_paths_answer_json_404(alice_client: APIClient) -> None:
    response = alice_client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}


def test_client_for_helper_uses_bearer(alice: Any) -> None:
    assert client_for(alice, keyword="Bearer").get("/api/jobs").status_code == 200


def test_the_status_filter_reads_a_comma_list_or_the_parameter_repeated(
    alice: Any, alice_client: Any
) -> None:
    JobFactory(owner=alice, status="failed")
    JobFactory(owner=alice, status="completed")
    JobFactory(owner=alice, status="waiting")
    for query in ("status=failed,completed", "status=failed&status=completed"):
        body = alice_client.get(f"/api/jobs?{query}").json()
        assert body["total"] == 2 and sorted(body["statuses"]) == ["completed", "failed"], query
    assert alice_client.get("/api/jobs?status=failed&status=nope").status_code == 400
