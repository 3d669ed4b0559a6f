"""Live job status over SSE, end to end: real uvicorn processes, a real worker, real Redis.

Events cross processes through Redis pub/sub; ids come from django-eventstream's storage, so
a reconnect with Last-Event-ID replays what was missed. Also the upstream problems we work
around: ids lost under Redis (fanout/django-eventstream#159) and delivery gaps (#160).
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings

from jobs.live import publish
from jobs.live.channels import job_channel, pubsub_channel
from jobs.live.storage import store_event
from jobs.models import Job
from tests.conftest import api_key_for, make_user, wait_until

pytestmark = pytest.mark.e2e

PLATFORMS = ["twitter-post", "instagram-post", "linkedin-post"]


@dataclass
class SseEvent:
    id: int | None
    data: dict[str, Any]


class SseStream:
    """A minimal SSE client over httpx: events, keep-alive comments, and the end."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments: list[str] = []
        self.ended = False
        self._lines = response.iter_lines()

    def next_event(self) -> SseEvent | None:
        event_id: int | None = None
        data: list[str] = []
        for line in self._lines:
            if line == "":
                if data:
                    return SseEvent(event_id, json.loads("\n".join(data)))
                event_id = None
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                event_id = int(value)
            elif field == "data":
                data.append(value)
        self.ended = True
        return None

    def until_final(self, deadline: float = 120) -> list[SseEvent]:
        """Events up to `final`; keep-alives never let a stuck job hang the suite."""
        received = []
        stop_at = time.monotonic() + deadline
        while (event := self.next_event()) is not None:
            received.append(event)
            if event.data["type"] == "final":
                break
            assert time.monotonic() < stop_at, f"no final after {deadline}s: {received}"
        return received


@contextmanager
def sse(base: str, path: str, headers: dict[str, str], timeout: float = 60) -> Iterator[SseStream]:
    with httpx.Client(timeout=httpx.Timeout(10, read=timeout)) as client:
        with client.stream(
            "GET", f"{base}{path}", headers={"Accept": "text/event-stream", **headers}
        ) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield SseStream(response)


def auth(user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key_for(user)}"}


def submit(base: str, headers: dict[str, str], platforms: list[str] = PLATFORMS) -> str:
    response = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "A lighthouse at dusk", "platforms": platforms},
        headers=headers, timeout=10,
    )  # fmt: skip
    assert response.status_code == 202, response.text
    return str(response.json()["jobId"])


def assert_contiguous(received: list[SseEvent]) -> None:
    ids = [event.id for event in received]
    assert None not in ids, f"an event lost its id: {ids}"  # upstream #159
    assert ids == list(range(ids[0], ids[0] + len(ids))), (
        f"gap or duplicate in {ids}"
    )  # upstream #160


def stored_event_count(job_id: str) -> int:
    from django_eventstream.utils import get_storage

    return int(get_storage().get_current_id(job_channel(job_id)))


def test_a_client_on_one_web_process_sees_every_update_of_a_job_submitted_through_another(
    start_web: Any, start_worker: Any
) -> None:
    alice = make_user("alice")
    web_a, web_b = start_web(), start_web()
    job_id = submit(web_b, auth(alice))  # no worker yet: the job waits

    with sse(web_a, f"/api/sse/jobs/{job_id}", auth(alice)) as stream:
        connected = stream.next_event()
        assert connected is not None
        assert connected.data["type"] == "connected"
        assert connected.data["jobId"] == job_id
        assert (connected.data["status"], connected.data["progress"]) == ("waiting", 0)
        start_worker(queues="images", concurrency=1)
        received = [connected, *stream.until_final()]
        assert stream.next_event() is None and stream.ended, "the stream goes on after final"

    assert_contiguous(received)
    updates = [event.data for event in received[1:-1]]
    assert all(update["type"] == "update" for update in updates)
    assert updates[0]["status"] == "active"
    final = received[-1].data
    progress = [update["progress"] for update in updates] + [final["progress"]]
    assert progress == sorted(progress) and progress[-1] == 100
    # Claimed, the original kept, then the platforms as they are recorded: renders that
    # finished together are recorded (and announced) together, the last with the completion.
    assert len(updates) >= 2 and updates[1]["progress"] == 30
    assert final["status"] == "completed"
    assert [image["platformId"] for image in final["result"]["images"]] == PLATFORMS
    # Everything the worker published reached the client, nothing more.
    assert received[-1].id == stored_event_count(job_id)


def test_reconnecting_with_last_event_id_mid_job_receives_the_missed_events(
    start_web: Any, start_worker: Any
) -> None:
    alice = make_user("alice")
    base = start_web()
    job_id = submit(base, auth(alice))
    with sse(base, f"/api/sse/jobs/{job_id}", auth(alice)) as stream:
        first = [stream.next_event()]
        start_worker(queues="images", concurrency=1)
        first.append(stream.next_event())  # the claim: the job is now active
    assert first[-1] is not None and first[-1].data["status"] == "active"
    last_seen = first[-1].id
    wait_until(lambda: Job.objects.get(pk=job_id).status == "completed", timeout=60, what="the job")

    with sse(
        base, f"/api/sse/jobs/{job_id}", {**auth(alice), "Last-Event-ID": str(last_seen)}
    ) as stream:
        rest = stream.until_final()
        assert stream.next_event() is None
    assert rest and rest[0].data["type"] == "update", "a resume replays, it does not start over"
    received = [event for event in first if event is not None] + rest
    assert_contiguous(received)
    assert received[-1].data["type"] == "final" and received[-1].id == stored_event_count(job_id)

    # A client that already saw final is told to stop: 204 ends an EventSource for good.
    response = httpx.get(
        f"{base}/api/sse/jobs/{job_id}",
        headers={**auth(alice), "Last-Event-ID": str(received[-1].id)},
        timeout=10,
    )
    assert response.status_code == 204


def test_a_client_that_connects_after_the_job_finished_gets_connected_and_final_at_once(
    start_web: Any, start_worker: Any
) -> None:
    alice = make_user("alice")
    base = start_web()
    start_worker(queues="images", concurrency=1)
    job_id = submit(base, auth(alice), platforms=["twitter-post"])
    wait_until(lambda: Job.objects.get(pk=job_id).status == "completed", timeout=60, what="the job")

    started = time.monotonic()
    with sse(base, f"/api/sse/jobs/{job_id}", auth(alice)) as stream:
        connected, final = stream.next_event(), stream.next_event()
        assert stream.next_event() is None and stream.ended
    assert time.monotonic() - started < 5
    assert connected is not None and connected.data["type"] == "connected"
    assert connected.data["status"] == "completed"
    assert final is not None and final.data["type"] == "final"
    assert final.data["result"]["totalImages"] == 1


def test_only_the_owner_and_staff_may_watch_a_job_and_refusals_come_before_any_event(
    start_web: Any,
) -> None:
    alice, bob, staff = make_user("alice"), make_user("bob"), make_user("root", staff=True)
    base = start_web()
    job_id = submit(base, auth(alice))

    def get(path: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.get(
            f"{base}{path}", headers={"Accept": "text/event-stream", **headers}, timeout=10
        )

    for path, headers, status in [
        (f"/api/sse/jobs/{job_id}", {}, 401),
        (f"/api/sse/jobs/{job_id}", {"Authorization": "Token not-a-token"}, 401),
        (f"/api/sse/jobs/{job_id}", auth(bob), 404),  # another user's job: no existence leak
        ("/api/sse/jobs/00000000-0000-0000-0000-000000000000", auth(alice), 404),
        ("/api/sse/jobs/not-a-uuid", auth(staff), 404),
        ("/api/sse/stats", auth(alice), 403),
        ("/api/sse/stats", {}, 401),
    ]:
        response = get(path, headers)
        assert response.status_code == status, (path, headers, response.text)
        assert response.headers["content-type"] == "application/json"
        assert "error" in response.json()

    with sse(base, f"/api/sse/jobs/{job_id}", auth(staff)) as stream:  # staff may watch any job
        event = stream.next_event()
        assert event is not None and event.data["type"] == "connected"
    with sse(
        base,
        f"/api/sse/jobs/{job_id}",
        {"Authorization": auth(alice)["Authorization"].replace("Bearer", "Token")},
    ) as stream:
        event = stream.next_event()
        assert event is not None and event.data["jobId"] == job_id


def test_the_stats_stream_sends_counts_when_they_change_at_most_once_a_second_with_keep_alives(
    start_web: Any,
) -> None:
    alice, staff = make_user("alice"), make_user("root", staff=True)
    base = start_web(env={"SSE_KEEPALIVE_SECONDS": "1"})
    with sse(base, "/api/sse/stats", auth(staff)) as stream:
        first = stream.next_event()
        assert first is not None and first.data["type"] == "stats"
        assert first.data["imageGeneration"]["waiting"] == 0
        assert set(first.data) >= {"imageGeneration", "fileCleanup", "timestamp"}
        headers = auth(alice)
        # A burst of changes, from another thread so that arrival times are read as they come.
        submitter = threading.Thread(target=lambda: [submit(base, headers) for _ in range(5)])
        submitter.start()
        seen: list[tuple[float, dict[str, Any]]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            event = stream.next_event()
            assert event is not None
            seen.append((time.monotonic(), event.data))
            if event.data["imageGeneration"]["waiting"] == 5:
                break
        submitter.join()
        assert seen and seen[-1][1]["imageGeneration"]["waiting"] == 5
        gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(seen)]
        assert all(gap > 0.9 for gap in gaps), f"more than one stats event a second: {gaps}"
        # Nothing changes now: only keep-alive comments, no repeated counts.
        quiet_until = time.monotonic() + 2.5
        comments_before = len(stream.comments)
        while time.monotonic() < quiet_until:
            line = next(stream._lines)
            assert not line.startswith("data:"), f"unchanged counts were sent again: {line}"
            if line.startswith(":"):
                stream.comments.append(line)
        assert len(stream.comments) > comments_before


def test_a_burst_of_events_arrives_complete_and_in_order(start_web: Any) -> None:
    """Upstream #160 (gaps): 200 events published as fast as possible from another thread
    (another Redis connection) all arrive, in order, each with its id (#159)."""
    alice = make_user("alice")
    base = start_web()
    job_id = submit(base, auth(alice))
    channel = job_channel(job_id)

    def publish_burst() -> None:
        for n in range(1, 201):
            publish.send_event(
                channel,
                "update",
                {"type": "update", "jobId": job_id, "status": "active", "progress": n // 2},
            )

    with sse(base, f"/api/sse/jobs/{job_id}", auth(alice)) as stream:
        connected = stream.next_event()
        assert connected is not None
        publisher = threading.Thread(target=publish_burst)
        publisher.start()
        received = [connected] + [stream.next_event() for _ in range(200)]  # type: ignore[list-item]
        publisher.join()
    assert_contiguous(received)
    assert [event.data["progress"] for event in received[1:]] == [n // 2 for n in range(1, 201)]


def read_sse_over_raw_socket(
    sock: socket.socket, raw: bytes = b"", deadline: float = 60
) -> list[SseEvent]:
    """Every event of a chunked SSE response read to its end, from a plain socket (``raw``:
    what was read of it already)."""
    sock.settimeout(deadline)
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    text = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        text, body = text + body[:size], body[size + 2 :]
    received = []
    for block in text.decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "data" in fields:
            received.append(
                SseEvent(int(fields["id"]) if "id" in fields else None, json.loads(fields["data"]))
            )
    return received


def test_a_client_that_stops_reading_gets_every_event_in_order_once_it_reads_again(
    start_web: Any,
) -> None:
    """While a client does not read, the server's write buffer fills and the hub cannot
    write to it directly: its stream queues the events, then catches up from storage."""
    alice = make_user("alice")
    base = start_web()
    job_id = submit(base, auth(alice))
    channel = job_channel(job_id)
    port = int(base.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: fills fast
    sock.connect(("127.0.0.1", port))
    token = auth(alice)["Authorization"]
    sock.sendall(
        f"GET /api/sse/jobs/{job_id} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    sock.settimeout(10)
    start = sock.recv(4096)
    assert start.startswith(b"HTTP/1.1 200"), start
    time.sleep(0.5)  # let the stream send `connected` and go live

    # About 5 MB while the client reads nothing: more than the kernel and uvicorn buffer.
    padding = "x" * 16384
    for n in range(1, 301):
        publish.send_event(
            channel, "update", {"type": "update", "jobId": job_id, "progress": n, "pad": padding}
        )
    publish.send_event(channel, "final", {"type": "final", "jobId": job_id, "status": "completed"})

    received = read_sse_over_raw_socket(sock, start)
    sock.close()
    progress = [event.data["progress"] for event in received if event.data["type"] == "update"]
    assert progress == list(range(1, 301)), "lost, repeated or out of order"
    assert received[-1].data["type"] == "final"
    assert_contiguous([event for event in received if event.data["type"] != "connected"])


def test_an_event_whose_redis_message_was_lost_is_read_from_storage(start_web: Any) -> None:
    """A hole in the ids (a lost pub/sub message) is filled from storage, in order."""
    alice = make_user("alice")
    base = start_web()
    job_id = submit(base, auth(alice))
    channel = job_channel(job_id)
    with sse(base, f"/api/sse/jobs/{job_id}", auth(alice)) as stream:
        assert stream.next_event() is not None
        # Stored but never published, as when Redis drops a message:
        store_event(
            channel, "update", json.dumps({"type": "update", "jobId": job_id, "progress": 10})
        )
        publish.send_event(channel, "update", {"type": "update", "jobId": job_id, "progress": 20})
        first, second = stream.next_event(), stream.next_event()
    assert first is not None and second is not None
    assert (first.data["progress"], second.data["progress"]) == (10, 20)
    assert second.id == first.id + 1  # type: ignore[operator]


def test_a_web_process_that_loses_its_redis_connection_catches_up_from_storage(
    start_web: Any,
) -> None:
    alice = make_user("alice")
    base = start_web()
    job_id = submit(base, auth(alice))
    channel = job_channel(job_id)
    admin = redis.Redis.from_url(settings.REDIS_URL)
    with sse(base, f"/api/sse/jobs/{job_id}", auth(alice)) as stream:
        assert stream.next_event() is not None
        # Only this test's web process: its hub names its connection with its pid.
        db = admin.connection_pool.connection_kwargs.get("db", 0)
        ours = [c for c in admin.client_list()
                if c["name"].startswith("snapasset-live-") and int(c["db"]) == db]  # fmt: skip
        assert ours, "the web process has no live-events subscription"
        for client in ours:
            admin.client_kill_filter(_id=client["id"])
        # Published while the hub is away (or before it resubscribes): lost to pub/sub.
        publish.send_event(channel, "update", {"type": "update", "jobId": job_id, "progress": 40})
        event = stream.next_event()
    assert event is not None and event.data["progress"] == 40


def test_live_events_of_another_redis_db_are_not_heard() -> None:
    """Redis pub/sub ignores db numbers; our channel name carries the db of REDIS_URL."""
    db = settings.EVENTSTREAM_REDIS.get("db", 0)
    assert pubsub_channel() == f"snapasset:live-events:db{db}"


@pytest.mark.slow
def test_the_embedded_default_streams_live_too(tmp_path: Any) -> None:
    """`make run` with no environment (SQLite + the embedded Redis): a stream follows a job."""
    from tests.system.test_end_to_end import EmbeddedDefault

    embedded = EmbeddedDefault(tmp_path)
    base, headers = embedded.base, embedded.headers
    stack = embedded.start("embedded", ["web", "worker", "redis"])
    try:
        job_id = submit(base, headers, platforms=["twitter-post"])
        with sse(base, f"/api/sse/jobs/{job_id}", headers) as stream:
            received = stream.until_final()
        assert received[0].data["type"] == "connected"
        assert received[-1].data["type"] == "final" and received[-1].data["status"] == "completed"
    finally:
        stack.stop(timeout=30)
