"""Stream tickets (POST /api/sse/tickets): how an EventSource on another origin, which cannot
send an Authorization header, opens a stream. A ticket opens one stream, once, within
SSE_TICKET_TTL_SECONDS, as the user it was issued to; everything else is a 401 JSON.

These tests speak to the views in-process (a stream's body is not read here: its status and
headers are answered before any event); tests/jobs/live/test_ticket_streams.py follows jobs
through real uvicorn processes and Chromium.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import redis
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.test import APIClient

from jobs.live.tickets import TICKET_KEY_PREFIX
from tests.conftest import client_for, make_user
from tests.factories import JobFactory
from tests.fakes.jwks import supabase_claims

pytestmark = pytest.mark.django_db

TICKETS = "/api/sse/tickets"


def stream(
    path: str,
    ticket: str,
    client: APIClient | None = None,
    headers: dict[str, str] | None = None,
    **query: str,
) -> Any:
    """GET a stream with `?ticket=` the way an EventSource does: no Authorization header."""
    client = client or APIClient()
    return client.get(
        path,
        {"ticket": ticket, **query},
        headers={"Accept": "text/event-stream", **(headers or {})},
    )


def ticket_for(client: APIClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(TICKETS, body, format="json")
    assert response.status_code == 201, response.content
    return dict(response.json())


def assert_refused(response: Any, status: int = 401) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert "error" in response.json()


@pytest.fixture
def alice_job(alice: Any) -> Any:
    return JobFactory(owner=alice)


def test_a_ticket_opens_its_jobs_stream_once(alice_client: APIClient, alice_job: Any) -> None:
    response = alice_client.post(TICKETS, {"jobId": str(alice_job.id)}, format="json")
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"ticket", "expiresIn", "stream", "jobId", "url"}
    assert (body["stream"], body["jobId"]) == ("job", str(alice_job.id))
    assert body["expiresIn"] == django_settings.SSE_TICKET_TTL_SECONDS == 30
    url = urlsplit(body["url"])
    assert (url.scheme, url.path) == ("http", f"/api/sse/jobs/{alice_job.id}")
    assert parse_qs(url.query) == {"ticket": [body["ticket"]]}

    first = stream(url.path, body["ticket"])
    assert first.status_code == 200
    assert first["Content-Type"] == "text/event-stream"

    again = stream(url.path, body["ticket"])  # EventSource's reconnect re-uses its URL
    assert_refused(again)
    assert "ask POST /api/sse/tickets" in again.json()["error"]


def test_tickets_are_unguessable_and_distinct(alice_client: APIClient, alice_job: Any) -> None:
    tickets = {ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"] for _ in range(20)}
    assert len(tickets) == 20
    assert all(len(ticket) == 43 for ticket in tickets)  # 32 random bytes, URL-safe base64


def test_redis_holds_only_a_digest_of_the_ticket_for_its_lifetime(
    alice_client: APIClient, alice_job: Any
) -> None:
    ticket = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]
    store = redis.Redis.from_url(django_settings.REDIS_URL)
    key = TICKET_KEY_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()
    record = json.loads(store.get(key))  # type: ignore[arg-type]
    assert record == {"user": alice_job.owner_id, "channel": f"job-{alice_job.id}"}
    assert 0 < store.ttl(key) <= 30  # type: ignore[operator]
    for name in store.scan_iter(f"{TICKET_KEY_PREFIX}*"):
        assert ticket.encode() not in name + (store.get(name) or b"")


def test_a_ticket_can_be_asked_for_with_every_kind_of_credential(
    alice: Any, alice_job: Any, settings: Any
) -> None:
    body = {"jobId": str(alice_job.id)}
    for keyword in ("Token", "Bearer"):
        assert (
            client_for(alice, keyword=keyword).post(TICKETS, body, format="json").status_code == 201
        )

    # A Supabase access token (JWT): its `sub` is the user, who sees only their own jobs.
    settings.SUPABASE_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
    access_token = jwt.encode(
        supabase_claims(alice.username), settings.SUPABASE_JWT_SECRET, algorithm="HS256"
    )
    supabase = APIClient()
    supabase.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    assert supabase.post(TICKETS, body, format="json").status_code == 201

    # The session (the web page): a POST needs the CSRF token, as everywhere.
    session = Client(enforce_csrf_checks=True)
    session.force_login(alice)
    refused = session.post(TICKETS, body, content_type="application/json")
    assert_refused(refused, 403)
    assert "CSRF" in refused.json()["error"]
    session.get("/admin/login/")  # sets the csrftoken cookie, as the web page would
    accepted = session.post(
        TICKETS,
        body,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=session.cookies["csrftoken"].value,
    )
    assert accepted.status_code == 201

    assert_refused(APIClient().post(TICKETS, body, format="json"), 401)


def test_asking_for_tickets_faster_than_the_rate_answers_429_with_retry_after(
    settings: Any,
) -> None:
    # Every ticket is a key in Redis for its TTL: the rate bounds what one user's credentials
    # can make it hold. Per user, in the shared Redis history (users with ids never seen).
    settings.SSE_TICKET_RATE = "3/min"
    mallory, alice = (make_user(f"u-{uuid.uuid4().hex[:12]}") for _ in range(2))
    mallory_job, alice_job = JobFactory(owner=mallory), JobFactory(owner=alice)
    mallory_client = client_for(mallory)
    for _ in range(3):
        ticket_for(mallory_client, {"jobId": str(mallory_job.id)})
    refused = mallory_client.post(TICKETS, {"jobId": str(mallory_job.id)}, format="json")
    assert refused.status_code == 429, refused.content
    assert refused["Content-Type"] == "application/json"
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.json()["retryAfter"] == retry_after
    assert "ticket" not in refused.json()
    # Another user is not held back by mallory's requests.
    ticket_for(client_for(alice), {"jobId": str(alice_job.id)})


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "jobId"),
        ({"stream": "job"}, "jobId"),
        ({"jobId": "not-a-uuid"}, "jobId"),
        ({"jobId": 12345}, "jobId"),
        ({"jobId": None}, "jobId"),
        ({"jobId": ["00000000-0000-0000-0000-000000000000"]}, "jobId"),
        ({"stream": "stats", "jobId": "00000000-0000-0000-0000-000000000000"}, "jobId"),
        ({"stream": "events"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"jobId": "00000000-0000-0000-0000-000000000000", "channel": "stats"}, "channel"),
        ({"stream": "stats", "userId": "bob"}, "userId"),
        ([], "non_field_errors"),
        ("job", "non_field_errors"),
    ],
)
def test_the_body_is_validated_strictly(staff_client: APIClient, body: Any, field: str) -> None:
    response = staff_client.post(TICKETS, body, format="json")
    assert_refused(response, 400)
    assert field in response.json()["details"], response.json()


def test_a_body_that_is_not_json_is_refused_with_json(alice_client: APIClient) -> None:
    malformed = alice_client.post(TICKETS, "{jobId:", content_type="application/json")
    assert_refused(malformed, 400)
    wrong_type = alice_client.post(TICKETS, "jobId=1", content_type="text/plain")
    assert_refused(wrong_type, 415)


def test_another_users_job_is_a_404_and_staff_may_follow_any_job(
    bob_client: APIClient, staff_client: APIClient, alice_job: Any
) -> None:
    body = {"jobId": str(alice_job.id)}
    assert_refused(bob_client.post(TICKETS, body, format="json"), 404)
    missing = {"jobId": "00000000-0000-0000-0000-000000000000"}
    assert_refused(staff_client.post(TICKETS, missing, format="json"), 404)

    ticket = ticket_for(staff_client, body)
    assert stream(f"/api/sse/jobs/{alice_job.id}", ticket["ticket"]).status_code == 200


def test_the_stats_ticket_is_for_staff_only(
    alice_client: APIClient, staff_client: APIClient
) -> None:
    refused = alice_client.post(TICKETS, {"stream": "stats"}, format="json")
    assert_refused(refused, 403)
    assert "staff" in refused.json()["error"]

    ticket = ticket_for(staff_client, {"stream": "stats"})
    assert set(ticket) == {"ticket", "expiresIn", "stream", "url"}
    assert urlsplit(ticket["url"]).path == "/api/sse/stats"
    opened = stream("/api/sse/stats", ticket["ticket"])
    assert opened.status_code == 200 and opened["Content-Type"] == "text/event-stream"
    assert_refused(stream("/api/sse/stats", ticket["ticket"]))


def test_an_expired_ticket_is_refused(
    alice_client: APIClient, alice_job: Any, settings: Any
) -> None:
    settings.SSE_TICKET_TTL_SECONDS = 1
    ticket = ticket_for(alice_client, {"jobId": str(alice_job.id)})
    assert ticket["expiresIn"] == 1
    time.sleep(1.2)
    assert_refused(stream(f"/api/sse/jobs/{alice_job.id}", ticket["ticket"]))


def test_a_ticket_opens_only_the_stream_it_was_issued_for_and_is_spent_by_trying_another(
    alice: Any, alice_client: APIClient, staff_client: APIClient, alice_job: Any
) -> None:
    other_job = JobFactory(owner=alice)
    ticket = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]
    assert_refused(stream(f"/api/sse/jobs/{other_job.id}", ticket))
    # Spent by that attempt: a ticket is good for one presentation, whatever its outcome.
    assert_refused(stream(f"/api/sse/jobs/{alice_job.id}", ticket))

    job_ticket = ticket_for(staff_client, {"jobId": str(alice_job.id)})["ticket"]
    assert_refused(stream("/api/sse/stats", job_ticket))
    stats_ticket = ticket_for(staff_client, {"stream": "stats"})["ticket"]
    assert_refused(stream(f"/api/sse/jobs/{alice_job.id}", stats_ticket))
    malformed_id_ticket = ticket_for(staff_client, {"jobId": str(alice_job.id)})["ticket"]
    assert_refused(stream("/api/sse/jobs/not-a-uuid", malformed_id_ticket))


@pytest.mark.parametrize(
    "ticket",
    [
        "",
        "x",
        secrets.token_urlsafe(32),  # the right shape, never issued
        secrets.token_urlsafe(32)[:-1] + "!",
        "a" * 5000,
        "' OR 1=1 --",
    ],
)
def test_a_forged_ticket_is_refused(alice_job: Any, ticket: str) -> None:
    assert_refused(stream(f"/api/sse/jobs/{alice_job.id}", ticket))


def test_a_ticket_is_the_only_credential_of_a_request_that_carries_one(
    alice_client: APIClient, bob_client: APIClient, alice_job: Any
) -> None:
    path = f"/api/sse/jobs/{alice_job.id}"
    # A spent ticket does not fall back to the header that came with it.
    ticket = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]
    assert stream(path, ticket).status_code == 200
    assert_refused(stream(path, ticket, client=alice_client))
    # The stream runs as the ticket's user, not as whoever else is signed in.
    ticket = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]
    assert stream(path, ticket, client=bob_client).status_code == 200


def test_the_stream_checks_the_tickets_user_again_when_it_opens(
    alice: Any, alice_client: APIClient, staff: Any, staff_client: APIClient, alice_job: Any
) -> None:
    ticket = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]
    alice.is_active = False
    alice.save()
    assert_refused(stream(f"/api/sse/jobs/{alice_job.id}", ticket))

    stats_ticket = ticket_for(staff_client, {"stream": "stats"})["ticket"]
    staff.is_staff = False
    staff.save()
    assert_refused(stream("/api/sse/stats", stats_ticket), 403)

    gone = JobFactory(owner=staff)
    gone_id = gone.id
    gone_ticket = ticket_for(staff_client, {"jobId": str(gone_id)})["ticket"]
    gone.delete()  # removed by cleanup meanwhile
    assert_refused(stream(f"/api/sse/jobs/{gone_id}", gone_ticket), 404)


@pytest.mark.django_db(transaction=True)
def test_a_ticket_is_redeemed_only_once_even_by_racing_requests(
    alice_client: APIClient, alice_job: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    ticket = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]

    def open_stream(_: int) -> int:
        try:
            return int(stream(f"/api/sse/jobs/{alice_job.id}", ticket).status_code)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(open_stream, range(8)))
    assert statuses == [200] + [401] * 7


def test_reconnecting_with_a_new_ticket_and_last_event_id_is_accepted(
    alice_client: APIClient, alice_job: Any
) -> None:
    """A spent ticket cannot reconnect; a new one, with the last id seen, resumes
    (tests/jobs/live/test_ticket_streams.py reads the replayed events)."""
    path = f"/api/sse/jobs/{alice_job.id}"
    ticket = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]
    assert stream(path, ticket).status_code == 200
    assert_refused(stream(path, ticket, headers={"Last-Event-ID": "3"}))
    fresh = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]
    assert stream(path, fresh, headers={"Last-Event-ID": "3"}).status_code == 200
    fresh = ticket_for(alice_client, {"jobId": str(alice_job.id)})["ticket"]
    assert stream(path, fresh, lastEventId="3").status_code == 200
