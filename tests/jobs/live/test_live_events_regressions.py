"""Regression tests of issue 13 #6 (a live stream never ends once its ids no longer match the
broker's), seen failing on main before the fix; through uvicorn, a worker and a Redis of the
test's own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.sse import StreamResult, read_stream
from tests.chaos.stack import ApiClient, ChaosStack
from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Each platform step takes a second or more (PNG at zlib 9), so the test acts mid-job.
SLOW_STEPS = {"PNG_COMPRESS_LEVEL": "9"}


def stream_in_background(
    client: ApiClient, job_id: str, **options: Any
) -> tuple[threading.Thread, list[tuple[int | None, dict[str, Any]]], dict[str, StreamResult]]:
    events: list[tuple[int | None, dict[str, Any]]] = []
    outcome: dict[str, StreamResult] = {}

    def read() -> None:
        outcome["result"] = read_stream(
            client.stack.base, client.headers, job_id,
            on_event=lambda i, data: events.append((i, data)), **options,
        )  # fmt: skip

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, events, outcome


def saw_final(events: list[tuple[int | None, dict[str, Any]]]) -> bool:
    return any(data.get("type") == "final" for _, data in events)


def test_a_connected_stream_still_ends_with_final_after_the_broker_is_flushed(
    live_stack: Callable[..., ChaosStack],
) -> None:
    stack = live_stack(**SLOW_STEPS)
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    stack.start_worker("images0")
    job_id = alice.submit("Watched through a flush")  # six platforms: ten events or so
    thread, events, outcome = stream_in_background(alice, job_id, timeout=120)
    wait_until(
        lambda: any(i is not None and i >= 5 for i, _ in events),
        timeout=90,
        what="the stream to reach event 5",
    )
    stack.redis.flush()
    alice.wait_status(job_id, "completed", "failed", timeout=120)
    try:
        wait_until(lambda: saw_final(events), timeout=20, what="the final event")
    except AssertionError:
        kinds = [f"{data.get('type')}#{i}" for i, data in events]
        raise AssertionError(f"the stream never delivered final; it saw {kinds}") from None


def test_a_stream_opened_with_a_last_event_id_above_the_current_id_ends_with_final(
    live_stack: Callable[..., ChaosStack],
) -> None:
    stack = live_stack()
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    job_id = alice.submit("Resumed from a future id", platforms=["twitter-post"])
    # An id from before the broker lost its data (or any id this job never reached).
    thread, events, outcome = stream_in_background(alice, job_id, last_event_id=1000, timeout=60)
    stack.start_worker("images0")
    alice.wait_status(job_id, "completed", "failed", timeout=90)
    try:
        wait_until(lambda: saw_final(events), timeout=20, what="the final event")
    except AssertionError:
        kinds = [f"{data.get('type')}#{i}" for i, data in events]
        raise AssertionError(f"the stream never delivered final; it saw {kinds}") from None
