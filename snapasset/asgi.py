"""ASGI entry point: `uvicorn snapasset.asgi:application` (SSE streams need ASGI)."""

from __future__ import annotations

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")

django_application = get_asgi_application()

from jobs.live.asgi import with_live_events  # noqa: E402  (needs the apps loaded)

# The loaded code is ~170k objects that live as long as the process: keep the cyclic GC's
# full collections from scanning them again and again. With thousands of open streams a
# full collection is a pause every stream feels (bench/sse.py).
gc.freeze()

# SSE requests share a few threads and carry the server's `send` (jobs/live/asgi.py).
application = with_live_events(django_application)
