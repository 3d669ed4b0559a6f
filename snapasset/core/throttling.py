"""Per-user rate limits, on the shared Redis of Django's default cache: job submission
(``SubmitRateThrottle``, ``settings.SUBMIT_RATE``) and stream tickets
(``StreamTicketRateThrottle``, ``settings.SSE_TICKET_RATE``).

The request history lives in the Redis of Django's default cache (settings.CACHES: its
LOCATION, timeouts and KEY_PREFIX), so every web process counts against the same limit. The
rate is read per request from ``settings.SUBMIT_RATE`` ("60/min"; "off" disables it). A
batch counts as the submissions it carries, all or none (``allow_submissions``).

The counting is DRF's sliding window (``SimpleRateThrottle``: the timestamps of the
submissions of the last period, newest first; a submission is refused when the period
already holds the rate's number), but kept in a Redis list and checked and recorded by one
Lua script: one round trip per submission. DRF's own throttle read the whole pickled history
with a GET and wrote it back with a SET (two round trips, a new Redis client object per
command, and under ASGI a new connection per request: Django's cache backends are per
request context there). The list is at ``<KEY_PREFIX>:1:throttle:submit:<user id>`` and
expires a period after the last submission it holds (``throttle:sse_ticket:<user id>`` for
tickets).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle

from snapasset.core.redis_clients import outage_known, record_outage, redis_client

logger = logging.getLogger(__name__)

# KEYS[1]: the history, a list of timestamps (seconds, as text), newest first.
# ARGV: now, the period (s), the rate's number of submissions, the submissions asked for.
# Answers {1, length} when they are admitted (and recorded), else {0, length, the oldest
# timestamp, the timestamp at index rate - asked (nil when there is none)}.
THROTTLE_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local duration = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local requested = tonumber(ARGV[4])
while true do
  local oldest = redis.call('LINDEX', key, -1)
  if not oldest or tonumber(oldest) > now - duration then break end
  redis.call('RPOP', key)
end
local length = redis.call('LLEN', key)
if length + requested > limit then
  local kept = limit - requested
  local at = false
  if kept >= 0 and kept < length then at = redis.call('LINDEX', key, kept) end
  return {0, length, redis.call('LINDEX', key, -1) or false, at}
end
for _ = 1, requested do redis.call('LPUSH', key, ARGV[1]) end
redis.call('EXPIRE', key, duration)
return {1, length + requested}
"""


def _cache_location() -> tuple[str, dict[str, Any]]:
    """The default cache's Redis URL and its options (settings.CACHES)."""
    config: dict[str, Any] = settings.CACHES["default"]
    location = config["LOCATION"]
    url = location[0] if isinstance(location, list | tuple) else location.split(",")[0]
    return str(url), dict(config.get("OPTIONS", {}))


@functools.cache
def _throttle_script(url: str, timeout: float | None, connect_timeout: float | None) -> Any:
    """The script, registered on this process's client of the cache's Redis. Not the cache
    backend's own client: Django keeps a cache backend per request context under ASGI, so
    each submit paid a new connection (connect, HELLO, SELECT) on top of its commands."""
    client = redis_client(url=url, timeout=timeout, connect_timeout=connect_timeout, retries=1)
    return client.register_script(THROTTLE_SCRIPT)


def history_key(key: str) -> str:
    """The Redis key of a throttle's history: the default cache's key (its KEY_PREFIX and
    VERSION, as Django's default KEY_FUNCTION makes it)."""
    config: dict[str, Any] = settings.CACHES["default"]
    return f"{config.get('KEY_PREFIX', '')}:{config.get('VERSION', 1)}:{key}"


class SubmitRateThrottle(UserRateThrottle):
    scope = "submit"
    cache_format = "throttle:%(scope)s:%(ident)s"
    # Submissions the request makes: one, or a batch's items (allow_submissions).
    requested = 1
    # What the last check saw (for wait()): the history's length, its oldest timestamp and
    # the one at index num_requests - requested.
    length = 0
    oldest: float | None = None
    kth: float | None = None

    duration: int  # set by SimpleRateThrottle.__init__ from the rate
    num_requests: int

    def get_rate(self) -> str | None:
        return settings.SUBMIT_RATE

    def allow_request(self, request: Request, view: Any) -> bool:
        # The cache (Redis) down or not answering: let the request through rather than
        # answer 500 or hang. The per-user pending cap, kept in the database, still bounds
        # the damage. A known outage is not tried again for a few seconds.
        if self.rate is None:
            return True
        url, options = _cache_location()
        if outage_known(url):
            return True
        try:
            return self._allow(request, view, url=url, options=options)
        except Exception:
            record_outage(url)
            logger.warning(
                "%s throttle skipped: the cache is unavailable", self.scope, exc_info=True
            )
            return True

    def allow_submissions(self, request: Request, view: Any, count: int) -> bool:
        """Whether ``count`` more submissions fit in the rate now; they are counted only
        if they all fit."""
        self.requested = count
        return self.allow_request(request, view)

    def _allow(self, request: Request, view: Any, *, url: str, options: dict[str, Any]) -> bool:
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        script = _throttle_script(
            url, options.get("socket_timeout"), options.get("socket_connect_timeout")
        )
        self.now = self.timer()
        answer = script(
            keys=[history_key(key)],
            args=[repr(self.now), self.duration, self.num_requests, self.requested],
        )
        self.length = int(answer[1])
        if int(answer[0]):
            return True
        self.oldest = float(answer[2]) if answer[2] is not None else None
        self.kth = float(answer[3]) if len(answer) > 3 and answer[3] is not None else None
        return False

    def wait(self) -> float:
        if self.requested > 1:
            # Until enough of the history has aged out for them all; never, for more than
            # the rate allows at all (then a whole period, the longest it can take).
            kept = self.num_requests - self.requested
            if kept < 0 or self.kth is None:
                return self.duration
            return self.duration - (self.now - self.kth)
        # Refused: the period holds the rate's number already (or more, when the rate was
        # lowered); the oldest leaves the window first. A 429 always says when to come back.
        if self.oldest is None:
            return self.duration
        return self.duration - (self.now - self.oldest)


class StreamTicketRateThrottle(SubmitRateThrottle):
    """Stream tickets per user (POST /api/sse/tickets): the same sliding window in Redis,
    its own history and rate. An unavailable Redis lets the request through here too; the
    ticket itself then cannot be stored and the view answers 503."""

    scope = "sse_ticket"

    def get_rate(self) -> str | None:
        return settings.SSE_TICKET_RATE
