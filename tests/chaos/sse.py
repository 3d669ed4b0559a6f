"""A client of the live job streams (GET /api/sse/jobs/{id}), as a browser's EventSource.

``read_stream`` opens one stream and reads it until the server ends it or a deadline passes.
``Watcher`` keeps one job's stream open on a thread for as long as the job runs, and
reconnects with ``Last-Event-ID`` whenever the stream breaks, as an EventSource does; it
is done when it has seen the ``final`` event (or the server said 204: nothing more).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class StreamResult:
    status: int = 0
    events: list[tuple[int | None, dict[str, Any]]] = field(default_factory=list)
    ended: bool = False  # the server closed the stream
    timed_out: bool = False  # still open (keep-alives only) at the deadline
    error: str = ""

    @property
    def final(self) -> dict[str, Any] | None:
        return next((data for _, data in self.events if data.get("type") == "final"), None)

    @property
    def final_id(self) -> int | None:
        return next((i for i, data in self.events if data.get("type") == "final"), None)

    @property
    def last_id(self) -> int | None:
        ids = [i for i, _ in self.events if i is not None]
        return ids[-1] if ids else None

    def describe(self) -> str:
        kinds = [f"{d.get('type')}#{i}" for i, d in self.events]
        how = "ended" if self.ended else "timed out" if self.timed_out else self.error or "?"
        return f"HTTP {self.status}, {how}, events {kinds}"


def read_stream(
    base: str,
    headers: dict[str, str],
    job_id: str,
    *,
    last_event_id: int | None = None,
    timeout: float = 20.0,
    stop: threading.Event | None = None,
    on_event: Callable[[int | None, dict[str, Any]], None] | None = None,
) -> StreamResult:
    """Read one stream until the server ends it, ``timeout`` seconds pass or ``stop`` is set
    (``on_event`` hears each event as it comes)."""
    result = StreamResult()
    request_headers = dict(headers, Accept="text/event-stream")
    if last_event_id is not None:
        request_headers["Last-Event-ID"] = str(last_event_id)
    deadline = time.monotonic() + timeout
    event_id: int | None = None
    data: list[str] = []
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0)) as client:
            with client.stream(
                "GET", f"{base}/api/sse/jobs/{job_id}", headers=request_headers
            ) as response:
                result.status = response.status_code
                if response.status_code != 200:
                    response.read()
                    result.ended = True
                    return result
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        event_id = int(line[3:].strip())
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        result.events.append((event_id, json.loads("\n".join(data))))
                        if on_event is not None:
                            on_event(*result.events[-1])
                        event_id, data = None, []
                    if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                        result.timed_out = True
                        return result
                result.ended = True
    except httpx.ReadTimeout:
        result.timed_out = True
    except httpx.HTTPError as exc:
        result.error = f"{exc.__class__.__name__}: {exc}"
    return result


class Watcher:
    """One job's stream, kept open (and reopened with Last-Event-ID) on a thread."""

    def __init__(self, base: str, headers: dict[str, str], job_id: str) -> None:
        self.base, self.headers, self.job_id = base, headers, job_id
        self.stop = threading.Event()
        self.final: dict[str, Any] | None = None
        self.no_content = False  # the server answered 204 (the client saw everything)
        self.connections = 0
        self.events: list[str] = []  # "type#id:status" of every event seen, in order
        self.log: list[str] = []
        self.thread = threading.Thread(target=self._run, name=f"watch-{job_id}", daemon=True)

    def start(self) -> Watcher:
        self.thread.start()
        return self

    @property
    def done(self) -> bool:
        return self.final is not None or self.no_content

    def _run(self) -> None:
        last_id: int | None = None

        def seen(event_id: int | None, data: dict[str, Any]) -> None:
            nonlocal last_id
            self.events.append(f"{data.get('type')}#{event_id}:{data.get('status')}")
            if event_id is not None:
                last_id = event_id

        while not self.stop.is_set() and not self.done:
            self.connections += 1
            opened_with = last_id
            result = read_stream(
                self.base, self.headers, self.job_id, last_event_id=last_id, timeout=3600,
                stop=self.stop, on_event=seen,
            )  # fmt: skip
            self.log.append(f"[{time.strftime('%H:%M:%S')} Last-Event-ID {opened_with}] "
                            + result.describe())  # fmt: skip
            if result.final is not None:
                self.final = result.final
            elif result.status == 204:
                self.no_content = True
            elif result.status in (401, 403, 404):
                return
            else:
                self.stop.wait(1.0)  # EventSource's retry delay (the server asks for 3 s)

    def close(self) -> None:
        self.stop.set()
