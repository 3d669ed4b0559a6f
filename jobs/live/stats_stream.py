"""The stats stream: GET /api/sse/stats, the job counts whenever they change (staff only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from jobs.live.channels import STATS_CHANNEL
from jobs.live.frames import KEEP_ALIVE, RETRY, sse_frame
from jobs.live.hub import hub, stats_counts, stats_payload


async def stats_event_stream() -> AsyncIterator[bytes]:
    """Counts at once, then whenever they change (at most once per interval), with
    keep-alives in between."""
    subscriber = hub.subscribe(STATS_CHANNEL)
    try:
        counts = await sync_to_async(stats_counts)()
        sent = json.dumps(counts, sort_keys=True)
        yield RETRY + sse_frame(json.dumps(stats_payload(counts)))
        keep_alive = settings.SSE_KEEPALIVE_SECONDS
        while True:
            await subscriber.wait(keep_alive)
            subscriber.resync = False
            if not subscriber.items:
                yield KEEP_ALIVE
                continue
            key, frame = subscriber.items[-1]
            subscriber.items.clear()
            if key != sent:
                sent = key
                yield frame
    finally:
        hub.unsubscribe(subscriber)
