"""The request-body limit, enforced by the ASGI application while the body is read.

Django's ASGI handler reads a whole request body before any middleware or view runs (into
memory, past FILE_UPLOAD_MAX_MEMORY_SIZE into a temporary file) and uvicorn sets no limit,
so a Django middleware can only refuse a large body after the server has taken it in full.
This wraps the ASGI application instead, for every route:

- a declared ``Content-Length`` over the limit is answered 413 at once, before any of the
  body is read;
- otherwise (a smaller declared length, or a chunked body with no length) the bytes are
  counted as the server hands them over, and the first message that passes the limit is
  answered 413; the application is told the client went away, so Django drops what it
  buffered (never more than the limit) without answering.

The 413 carries ``Connection: close``: the server closes the connection after it instead of
reading the rest of the body. What the server had already taken from the socket is bounded
by its own read buffer (uvicorn pauses reading past 64 KiB that the application has not
consumed).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from snapasset.core.access_log import log_asgi_answer

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: Django's and uvicorn's own ASGI types differ in variance.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _json_response(status: int, body: dict[str, Any]) -> tuple[Message, Message]:
    content = json.dumps(body).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": content, "more_body": False}


def _declared_length(scope: MutableMapping[str, Any]) -> int | None:
    """The Content-Length header as an int; None when absent; ValueError when malformed."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            length = int(value)
            if length < 0:
                raise ValueError(value)
            return length
    return None


def limit_request_body(app: ASGIApp, *, max_bytes: int) -> ASGIApp:
    """``app`` with request bodies over ``max_bytes`` refused with 413 while being read."""
    too_large = _json_response(
        413,
        {"error": f"Request body is larger than {max_bytes // 1024} KiB", "limit": max_bytes},
    )
    bad_length = _json_response(400, {"error": "Invalid Content-Length header"})

    async def refuse(
        scope: MutableMapping[str, Any], send: Send, response: tuple[Message, Message]
    ) -> None:
        start, body = response
        # Django never sees this request: its access line and request id are given here.
        request_id = log_asgi_answer(scope, start["status"])
        headers = [*start["headers"], (b"x-request-id", request_id.encode())]
        await send({**start, "headers": headers})
        await send(body)

    async def application(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        try:
            declared = _declared_length(scope)
        except ValueError:
            await refuse(scope, send, bad_length)
            return
        if declared is not None and declared > max_bytes:
            await refuse(scope, send, too_large)
            return

        received = 0
        refused = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    refused = True
                    if not response_started:
                        await refuse(scope, send, too_large)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            # Once refused, the 413 is the response: whatever the application still
            # sends would be a second one.
            nonlocal response_started
            if not refused:
                response_started = True
                await send(message)

        await app(scope, counting_receive, guarded_send)

    return application
