"""In the bench worker: record when each task starts (task_prerun), so the bench can
measure enqueue -> start without touching the task itself."""

from __future__ import annotations

import time
from typing import Any

from celery.signals import task_prerun
from django.conf import settings

_client: Any = None


@task_prerun.connect
def record_start(task_id: str | None = None, **kwargs: Any) -> None:
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(settings.REDIS_URL)
    _client.set(f"bench:start:{task_id}", repr(time.time()), ex=3600)
