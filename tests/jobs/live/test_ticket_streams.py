"""Stream tickets through real processes: uvicorn web processes, a Celery worker, Redis.

A ticket issued by one web process opens the stream on another (tickets live in Redis),
follows the job to `final`, and cannot open it again: an EventSource's reconnect (same URL,
Last-Event-ID) is refused, and a new ticket with the last id seen resumes without loss.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from jobs.models import Job
from tests.conftest import free_port, make_user, wait_until
from tests.jobs.live.test_streams import (
    SseEvent,
    assert_contiguous,
    auth,
    sse,
    stored_event_count,
    submit,
)

pytestmark = pytest.mark.e2e


def new_ticket(base: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{base}/api/sse/tickets", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_ticket_from_one_web_process_follows_a_job_to_final_on_another_and_only_once(
    start_web: Any, start_worker: Any
) -> None:
    alice = make_user("alice")
    issuer, streamer = start_web(), start_web(access_log=True)
    start_worker(queues="images", concurrency=1)
    job_id = submit(issuer, auth(alice), platforms=["twitter-post", "instagram-post"])
    ticket = new_ticket(issuer, auth(alice), {"jobId": job_id})
    assert ticket["url"].startswith(f"{issuer}/api/sse/jobs/{job_id}?ticket=")
    url = ticket["url"].replace(issuer, streamer)  # any web process redeems it

    with sse(streamer, url.removeprefix(streamer), headers={}) as stream:
        received = stream.until_final()
        assert stream.next_event() is None and stream.ended
    assert received[0].data["type"] == "connected"
    final = received[-1].data
    assert (final["type"], final["status"]) == ("final", "completed")
    assert final["result"]["totalImages"] == 2
    assert_contiguous([event for event in received if event.data["type"] != "connected"])

    # The server ended the stream after final: an EventSource reconnects with the same URL
    # and the id of final. The ticket is spent, so it gets a 401 and stops for good.
    again = httpx.get(
        url,
        headers={"Accept": "text/event-stream", "Last-Event-ID": str(received[-1].id)},
        timeout=10,
    )
    assert again.status_code == 401
    assert again.headers["content-type"] == "application/json"
    assert "POST /api/sse/tickets" in again.json()["error"]

    # The access log shows the requests, never the ticket.
    log = start_web.process(streamer).output()
    assert f"/api/sse/jobs/{job_id}?ticket=[redacted]" in log
    assert ticket["ticket"] not in log


def test_a_new_ticket_with_the_last_event_id_resumes_where_the_dropped_stream_left_off(
    start_web: Any, start_worker: Any
) -> None:
    alice = make_user("alice")
    base = start_web()
    job_id = submit(base, auth(alice))  # no worker yet: the job waits
    path = f"/api/sse/jobs/{job_id}"

    ticket = new_ticket(base, auth(alice), {"jobId": job_id})["ticket"]
    with sse(base, f"{path}?ticket={ticket}", headers={}) as stream:
        first: list[SseEvent | None] = [stream.next_event()]
        start_worker(queues="images", concurrency=1)
        first.append(stream.next_event())  # the claim: the job is now active
    # ...and the connection drops here, mid-job.
    seen = [event for event in first if event is not None]
    assert [event.data["status"] for event in seen] == ["waiting", "active"]
    wait_until(lambda: Job.objects.get(pk=job_id).status == "completed", timeout=60, what="the job")

    # The EventSource's own reconnect: same URL, Last-Event-ID; refused.
    last_id = str(seen[-1].id)
    refused = httpx.get(
        f"{base}{path}?ticket={ticket}", headers={"Last-Event-ID": last_id}, timeout=10
    )
    assert refused.status_code == 401

    # The client's: a new ticket, and the last id as ?lastEventId= (a new EventSource cannot
    # set the header). It replays what was missed, from the next id on, up to final.
    ticket = new_ticket(base, auth(alice), {"jobId": job_id})["ticket"]
    with sse(base, f"{path}?ticket={ticket}&lastEventId={last_id}", headers={}) as stream:
        rest = stream.until_final()
        assert stream.next_event() is None
    assert rest and rest[0].data["type"] == "update", "a resume replays, it does not start over"
    assert_contiguous([seen[-1], *rest])
    assert rest[-1].data["type"] == "final" and rest[-1].id == stored_event_count(job_id)

    # The header works as well, with yet another ticket: after final, 204 ends an EventSource.
    ticket = new_ticket(base, auth(alice), {"jobId": job_id})["ticket"]
    done = httpx.get(
        f"{base}{path}?ticket={ticket}", headers={"Last-Event-ID": str(rest[-1].id)}, timeout=10
    )
    assert done.status_code == 204


def test_tickets_answer_503_json_while_redis_is_down(start_web: Any) -> None:
    alice = make_user("alice")
    base = start_web(env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    response = httpx.post(
        f"{base}/api/sse/tickets", json={"stream": "stats"}, headers=auth(alice), timeout=30
    )
    assert response.status_code == 403  # refusals that need no Redis still come first
    staff = make_user("root", staff=True)
    response = httpx.post(
        f"{base}/api/sse/tickets", json={"stream": "stats"}, headers=auth(staff), timeout=30
    )
    assert response.status_code == 503
    assert "unavailable" in response.json()["error"]
    stream = httpx.get(f"{base}/api/sse/stats?ticket={'a' * 43}", timeout=30)
    assert stream.status_code == 503
    assert stream.headers["content-type"] == "application/json"
