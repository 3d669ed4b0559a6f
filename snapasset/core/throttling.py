"""Per-user rate limit on job submission (DRF throttling on the shared Redis cache).

The request history lives in Django's default cache, which is Redis (settings.CACHES), so
every web process counts against the same limit. The rate is read per request from
``settings.SUBMIT_RATE`` ("60/min"; "off" disables it).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle

from snapasset.core.redis_clients import outage_known, record_outage

logger = logging.getLogger(__name__)


class SubmitRateThrottle(UserRateThrottle):
    scope = "submit"

    def get_rate(self) -> str | None:
        return settings.SUBMIT_RATE

    def allow_request(self, request: Request, view: Any) -> bool:
        # The cache (Redis) down or not answering: let the request through rather than
        # answer 500 or hang. The per-user pending cap, kept in the database, still bounds
        # the damage. A known outage is not tried again for a few seconds.
        if self.get_rate() is not None and outage_known():
            return True
        try:
            return super().allow_request(request, view)
        except Exception:
            record_outage()
            logger.warning("submit throttle skipped: the cache is unavailable", exc_info=True)
            return True

    duration: int  # set by SimpleRateThrottle.allow_request from the rate

    def wait(self) -> float:
        # DRF answers None when the history is over the limit (the rate was lowered);
        # a 429 always says when to come back.
        waited = super().wait()
        if waited is not None:
            return waited
        return self.duration - (self.now - self.history[-1]) if self.history else self.duration
