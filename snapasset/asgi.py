"""ASGI entry point: `uvicorn snapasset.asgi:application` (SSE streams need ASGI)."""

from __future__ import annotations

import gc
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")

django_application = get_asgi_application()

from jobs.live import SERVER_SEND_KEY  # noqa: E402  (needs the apps loaded)

# The loaded code is ~170k objects that live as long as the process: keep the cyclic GC's
# full collections from scanning them again and again. With thousands of open streams a
# full collection is a pause every stream feels (bench/sse.py).
gc.freeze()

# Django gives every ASGI request its own thread for its sync parts (middleware, signals,
# DRF views), and keeps that thread until the response ends: for an SSE stream that is
# hours. Streams instead share these few threads (each one runs one call at a time, as
# thread-sensitive code expects), so 5,000 open streams hold 5,000 small tasks, not 5,000
# threads. Their sync work is short (auth, one or two queries) and happens at open/close.
SSE_PATH_PREFIX = "/api/sse/"
SSE_THREADS = 4
_sse_executors = itertools.cycle(
    [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sse-{i}") for i in range(SSE_THREADS)]
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith(SSE_PATH_PREFIX):
        async with ThreadSensitiveContext(executor=next(_sse_executors)):
            await django_application({**scope, SERVER_SEND_KEY: send}, receive, send)
        return
    await django_application(scope, receive, send)
