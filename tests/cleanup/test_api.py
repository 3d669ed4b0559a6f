"""POST /api/jobs/cleanup: staff queue a cleanup job; everyone else and bad bodies are refused."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job, JobKind

pytestmark = pytest.mark.django_db


def test_staff_queue_a_cleanup_job(staff_client: APIClient) -> None:
    response = staff_client.post(
        "/api/jobs/cleanup", {"type": "failed-generations", "olderThanDays": 3}, format="json"
    )
    assert response.status_code == 202
    body = response.json()
    assert (body["type"], body["status"]) == ("failed-generations", "queued")
    job = Job.objects.get(pk=body["jobId"])
    assert job.kind == JobKind.FILE_CLEANUP
    assert job.params == {"type": "failed-generations", "olderThanDays": 3}


def test_cleanup_is_staff_only(alice_client: APIClient) -> None:
    response = alice_client.post("/api/jobs/cleanup", {"type": "all"}, format="json")
    assert response.status_code == 403
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"type": "everything"},
        {"olderThanDays": -1},
        {"olderThanDays": "7"},
        {"type": "all", "force": True},
    ],
)
def test_cleanup_refuses_invalid_bodies(staff_client: APIClient, body: dict[str, Any]) -> None:
    response = staff_client.post("/api/jobs/cleanup", body, format="json")
    assert response.status_code == 400
    assert response.json()["details"]
