"""Live-event channels: one per job plus the stats channel, who may read each, and the one
Redis pub/sub channel that carries them all between processes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django_eventstream.channelmanager import DefaultChannelManager

STATS_CHANNEL = "stats"
JOB_CHANNEL_PREFIX = "job-"


def job_channel(job_id: object) -> str:
    return f"{JOB_CHANNEL_PREFIX}{job_id}"


def pubsub_channel() -> str:
    """The Redis pub/sub channel of this deployment's live events.

    Pub/sub ignores Redis db numbers, so the name carries the db of REDIS_URL (and may be
    set outright with LIVE_EVENTS_CHANNEL): two deployments or test runs sharing one Redis
    server on different dbs never hear each other's events.
    """
    return str(settings.LIVE_EVENTS_CHANNEL)


class JobChannelManager(DefaultChannelManager):
    """Only a job's owner and staff may read its channel; the stats channel is staff-only."""

    def can_read_channel(self, user: Any, channel: str) -> bool:
        if user is None or not user.is_authenticated:
            return False
        if user.is_staff:
            return True
        if channel.startswith(JOB_CHANNEL_PREFIX):
            from jobs.models import Job

            job_id = channel.removeprefix(JOB_CHANNEL_PREFIX)
            try:
                return Job.objects.filter(pk=job_id, owner=user).exists()
            except Exception:
                return False
        return False
