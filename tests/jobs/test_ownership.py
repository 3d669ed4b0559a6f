"""The ownership matrix: every endpoint of jobs/urls.py, cleanup/urls.py and /health x
(owner, other user, staff, anonymous), in one table.

"owner" is alice, who owns the jobs in the paths; "other" is bob, an ordinary user who owns
nothing here; "staff" is a staff user; "anonymous" sends no credentials. Another user's job
is a 404 (not a 403: existence does not leak) and stays untouched.

The live-event streams and the zip download answer a stream when allowed (its content type
is checked, the stream is not read: the stats stream never ends); their refusals are JSON
like every other endpoint's. tests/jobs/live/test_streams.py reads the streams themselves.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job, JobKind, JobStatus
from tests.conftest import client_for
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

OWNER, OTHER, STAFF, ANON = "owner", "other", "staff", "anonymous"

# (method, path, body, {role: expected status}). {waiting} / {completed} / {failed} are
# alice's jobs in that state (in the path or a body's strings), so each operation has
# something it may do.
MATRIX: list[tuple[str, str, Any, dict[str, int]]] = [
    (
        "post",
        "/api/jobs/generate",
        {"prompt": "A fox"},
        {OWNER: 202, OTHER: 202, STAFF: 202, ANON: 401},
    ),
    (
        "post",
        "/api/jobs/generate/batch",
        [{"prompt": "A fox"}, {"prompt": "A fox for alice", "userId": "alice"}],
        {OWNER: 200, OTHER: 200, STAFF: 200, ANON: 401},
    ),
    ("get", "/api/jobs", None, {OWNER: 200, OTHER: 200, STAFF: 200, ANON: 401}),
    ("get", "/api/jobs/stats/overview", None, {OWNER: 200, OTHER: 200, STAFF: 200, ANON: 401}),
    ("post", "/api/jobs/cleanup", {"type": "all"}, {OWNER: 403, OTHER: 403, STAFF: 202, ANON: 401}),
    ("get", "/api/jobs/{waiting}", None, {OWNER: 200, OTHER: 404, STAFF: 200, ANON: 401}),
    ("get", "/api/jobs/{completed}/result", None, {OWNER: 200, OTHER: 404, STAFF: 200, ANON: 401}),
    ("post", "/api/jobs/{failed}/retry", None, {OWNER: 200, OTHER: 404, STAFF: 200, ANON: 401}),
    ("delete", "/api/jobs/{waiting}", None, {OWNER: 200, OTHER: 404, STAFF: 200, ANON: 401}),
    (
        "get",
        "/api/jobs/{completed}/download.zip",
        None,
        {OWNER: 200, OTHER: 404, STAFF: 200, ANON: 401},
    ),
    (
        "get",
        "/api/jobs/{completed}/deliveries",
        None,
        {OWNER: 200, OTHER: 404, STAFF: 200, ANON: 401},
    ),
    # Each user's own secret: nobody reaches another's.
    ("get", "/api/webhooks/secret", None, {OWNER: 200, OTHER: 200, STAFF: 200, ANON: 401}),
    ("post", "/api/webhooks/secret", None, {OWNER: 200, OTHER: 200, STAFF: 200, ANON: 401}),
    ("get", "/api/sse/jobs/{completed}", None, {OWNER: 200, OTHER: 404, STAFF: 200, ANON: 401}),
    ("get", "/api/sse/stats", None, {OWNER: 403, OTHER: 403, STAFF: 200, ANON: 401}),
    (
        "post",
        "/api/sse/tickets",
        {"jobId": "{waiting}"},
        {OWNER: 201, OTHER: 404, STAFF: 201, ANON: 401},
    ),
    (
        "post",
        "/api/sse/tickets",
        {"stream": "stats"},
        {OWNER: 403, OTHER: 403, STAFF: 201, ANON: 401},
    ),
    ("get", "/api/platforms", None, {OWNER: 200, OTHER: 200, STAFF: 200, ANON: 401}),
    ("get", "/api/usage", None, {OWNER: 200, OTHER: 200, STAFF: 200, ANON: 401}),
    ("get", "/health", None, {OWNER: 200, OTHER: 200, STAFF: 200, ANON: 200}),
]
CASES = [
    pytest.param(method, path, body, role, expected, id=f"{method} {path} as {role}")
    for method, path, body, statuses in MATRIX
    for role, expected in statuses.items()
]


@pytest.fixture
def alice_jobs(alice: Any) -> dict[str, Job]:
    return {
        "waiting": JobFactory(owner=alice, status=JobStatus.WAITING),
        "completed": JobFactory(owner=alice, status=JobStatus.COMPLETED),
        "failed": JobFactory(owner=alice, status=JobStatus.FAILED, failed_reason="boom"),
    }


@pytest.fixture
def clients(alice: Any, bob: Any, staff: Any) -> dict[str, APIClient]:
    return {
        OWNER: client_for(alice),
        OTHER: client_for(bob),
        STAFF: client_for(staff),
        ANON: APIClient(),
    }


def test_every_endpoint_and_method_is_in_the_matrix() -> None:
    from jobs import urls

    covered = {(method, re.sub(r"\{\w+\}", "{id}", path)) for method, path, _, _ in MATRIX}
    for pattern in urls.urlpatterns:
        route = "/api/" + re.sub(r"<[^>]+>", "{id}", str(pattern.pattern))
        view = pattern.callback.view_class  # type: ignore[attr-defined]
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view, method):
                assert (method, route) in covered, f"{method} {route} has no row in the matrix"
    assert ("get", "/health") in covered


@pytest.mark.parametrize("method, path, body, role, expected", CASES)
def test_ownership_matrix(
    clients: dict[str, APIClient],
    alice_jobs: dict[str, Job],
    method: str,
    path: str,
    body: Any,
    role: str,
    expected: int,
) -> None:
    before = {job.pk: Job.objects.get(pk=job.pk).status for job in alice_jobs.values()}
    jobs = {state: job.pk for state, job in alice_jobs.items()}
    url = path.format(**jobs)
    if isinstance(body, dict):
        body = {k: v.format(**jobs) if isinstance(v, str) else v for k, v in body.items()}
    response = (
        getattr(clients[role], method)(url, body, format="json")
        if body
        else getattr(clients[role], method)(url)
    )
    if response.streaming:
        assert response.status_code == expected
        assert response["Content-Type"].startswith(("text/event-stream", "application/zip"))
        response.close()
        return
    assert response.status_code == expected, response.content
    assert response["Content-Type"].startswith("application/json")
    payload = response.json()
    if expected >= 400:
        assert payload["error"]
    if expected == 404:
        assert payload == {"error": "Job not found"}
    if expected >= 400:
        # A refused request changed nothing.
        assert {job.pk: Job.objects.get(pk=job.pk).status for job in alice_jobs.values()} == before


def _listed_ids(client: APIClient) -> set[str]:
    return {job["jobId"] for job in client.get("/api/jobs?limit=100").json()["jobs"]}


def test_the_list_shows_owners_their_jobs_others_none_and_staff_all(
    clients: dict[str, APIClient], alice_jobs: dict[str, Job], bob: Any
) -> None:
    bobs = JobFactory(owner=bob)
    alices = {str(job.pk) for job in alice_jobs.values()}
    assert _listed_ids(clients[OWNER]) == alices
    assert _listed_ids(clients[OTHER]) == {str(bobs.pk)}
    assert _listed_ids(clients[STAFF]) == alices | {str(bobs.pk)}


def test_stats_count_own_jobs_for_users_and_every_job_for_staff(
    clients: dict[str, APIClient], alice_jobs: dict[str, Job], bob: Any
) -> None:
    JobFactory(owner=bob, status=JobStatus.WAITING)
    JobFactory(owner=None, kind=JobKind.FILE_CLEANUP, status=JobStatus.COMPLETED)

    def counts(role: str) -> tuple[int, int, int]:
        body = clients[role].get("/api/jobs/stats/overview").json()
        image = body["imageGeneration"]
        return image["waiting"], image["completed"], body["fileCleanup"]["completed"]

    assert counts(OWNER) == (1, 1, 0)
    assert counts(OTHER) == (1, 0, 0)
    assert counts(STAFF) == (2, 1, 1)


def test_the_admin_is_for_staff_only(client: Any, alice: Any, staff: Any) -> None:
    assert client.get("/admin/").status_code == 302  # to the login page
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200
