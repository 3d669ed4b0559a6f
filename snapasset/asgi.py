"""ASGI entry point: `uvicorn snapasset.asgi:application` (SSE streams need ASGI)."""

from __future__ import annotations

import gc
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")

django_application = get_asgi_application()

from jobs.live.asgi import with_live_events  # noqa: E402  (needs the apps loaded)
from snapasset.core.body_limit import limit_request_body  # noqa: E402

# The loaded code is ~170k objects that live as long as the process: keep the cyclic GC's
# full collections from scanning them again and again. With thousands of open streams a
# full collection is a pause every stream feels (bench/sse.py).
gc.freeze()

# Bodies over the limit are refused while they are read, before Django buffers them
# (snapasset/core/body_limit.py). SSE requests share a few threads and carry the server's
# own `send` (jobs/live/asgi.py), so the limit goes inside: it must not wrap that `send`.
application = with_live_events(
    limit_request_body(django_application, max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
)
