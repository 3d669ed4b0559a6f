"""What goes down an SSE stream: event frames, keep-alive comments, the reconnect delay."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

KEEP_ALIVE = b": keep-alive\n\n"
RETRY = b"retry: 3000\n\n"


def sse_frame(data: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {data}\n\n".encode()


@dataclass(frozen=True, slots=True)
class LiveEvent:
    id: int | None
    frame: bytes
    final: bool


def error_frame(job_id: str | None, message: str) -> bytes:
    payload: dict[str, Any] = {"type": "error", "error": message}
    if job_id is not None:
        payload["jobId"] = job_id
    return sse_frame(json.dumps(payload))
