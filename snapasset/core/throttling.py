"""Per-user rate limit on job submission (DRF throttling on the shared Redis cache).

The request history lives in Django's default cache, which is Redis (settings.CACHES), so
every web process counts against the same limit. The rate is read per request from
``settings.SUBMIT_RATE`` ("60/min"; "off" disables it). A batch counts as the submissions it
carries, all or none (``allow_submissions``).
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
    # Submissions the request makes: one, or a batch's items (allow_submissions).
    requested = 1

    def get_rate(self) -> str | None:
        return settings.SUBMIT_RATE

    def allow_request(self, request: Request, view: Any) -> bool:
        # The cache (Redis) down or not answering: let the request through rather than
        # answer 500 or hang. The per-user pending cap, kept in the database, still bounds
        # the damage. A known outage is not tried again for a few seconds.
        if self.get_rate() is not None and outage_known():
            return True
        try:
            if self.requested == 1:
                return super().allow_request(request, view)
            return self._allow_several(request, view)
        except Exception:
            record_outage()
            logger.warning("submit throttle skipped: the cache is unavailable", exc_info=True)
            return True

    def allow_submissions(self, request: Request, view: Any, count: int) -> bool:
        """Whether ``count`` more submissions fit in the rate now; they are counted only
        if they all fit."""
        self.requested = count
        return self.allow_request(request, view)

    def _allow_several(self, request: Request, view: Any) -> bool:
        # SimpleRateThrottle.allow_request, for ``requested`` submissions at once.
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) + self.requested > self.num_requests:
            return False
        self.history[:0] = [self.now] * self.requested
        self.cache.set(self.key, self.history, self.duration)
        return True

    duration: int  # set by SimpleRateThrottle.allow_request from the rate
    num_requests: int

    def wait(self) -> float:
        if self.requested > 1:
            # Until enough of the history has aged out for them all; never, for more than
            # the rate allows at all (then a whole period, the longest it can take).
            kept = self.num_requests - self.requested
            if kept < 0 or kept >= len(self.history):
                return self.duration
            return self.duration - (self.now - self.history[kept])
        # DRF answers None when the history is over the limit (the rate was lowered);
        # a 429 always says when to come back.
        waited = super().wait()
        if waited is not None:
            return waited
        return self.duration - (self.now - self.history[-1]) if self.history else self.duration
