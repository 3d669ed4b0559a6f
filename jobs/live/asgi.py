"""The ASGI side of live events: SSE requests share a few threads, and carry the server's send.

Django gives every ASGI request its own thread for its sync parts (middleware, signals,
DRF views), and keeps that thread until the response ends: for an SSE stream that is
hours. Streams instead share these few threads (each one runs one call at a time, as
thread-sensitive code expects), so 5,000 open streams hold 5,000 small tasks, not 5,000
threads. Their sync work is short (auth, one or two queries) and happens at open/close.

The server's own `send` goes into the scope of SSE requests (SERVER_SEND_KEY), so that the
hub can write events straight to a caught-up client (jobs.live.direct).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext

from jobs.live.direct import SERVER_SEND_KEY

SSE_PATH_PREFIX = "/api/sse/"
SSE_THREADS = 4

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def with_live_events(django_application: ASGIApp) -> ASGIApp:
    """The ASGI application: Django's, with SSE requests served as described above."""
    sse_executors = itertools.cycle(
        [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sse-{i}")
            for i in range(SSE_THREADS)
        ]
    )

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(SSE_PATH_PREFIX):
            async with ThreadSensitiveContext(executor=next(sse_executors)):
                await django_application({**scope, SERVER_SEND_KEY: send}, receive, send)
            return
        await django_application(scope, receive, send)

    return application
