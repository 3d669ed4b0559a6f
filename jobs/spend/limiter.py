"""One rate limit of the image model for the whole deployment, kept in Redis.

Every worker process on every machine asks the same Redis before a paid call:

    limiter = provider_limiter()
    decision = limiter.acquire(waiter=str(job.pk), priority=job.priority)
    if isinstance(decision, Wait):
        ...  # the job becomes `delayed` for decision.seconds; no process waits, no attempt spent
    try:
        ...  # the paid call
    finally:
        limiter.release(decision)

``acquire`` never blocks: it grants a slot or says how long to wait. One Lua script decides
atomically, on Redis's clock (``TIME``), so processes with skewed clocks agree.

**Rate: GCRA** (the generic cell rate algorithm, a token bucket kept as one timestamp). With
OPENAI_IMAGES_PER_MINUTE = r, calls are spaced by an emission interval T = 61 s / r: the
extra second per minute absorbs the jitter between our grant and the provider's clock, so
no sliding minute at the provider sees more than r calls. Half of that second is lent to
callers that come back a little late (a countdown is never exact): a call may go up to
min(T / 2, 0.5 s) before its cell, so lateness does not push every later call back (the
benchmark's total time is within about 10% of the minimum). OPENAI_IMAGES_BURST = b lets b
calls through at once after a quiet spell (tolerance (b - 1) T more); the default 1 spaces
every call, which is what an account whose per-minute limit is enforced over shorter
periods (OpenAI's are) needs, and the only setting that keeps every sliding minute at r.

**Concurrency** (OPENAI_MAX_CONCURRENT): a granted slot is a lease in a sorted set scored by
its expiry. ``release`` ends it when the call returns; a worker killed by SIGKILL never
releases, and its lease expires after ``lease_seconds`` (by default the longest a call can
last: the generation and the download of its answer), so a slot is never lost for good.
``renew`` extends a lease for a caller that runs longer.

**Penalty**: a 429 from the provider means the account is over its limit whatever we
counted (another client of the account, a lower limit than configured). ``penalize``
blocks every caller until the retry-after has passed and empties the bucket (the first
call after the block is alone, the next ones spaced by T), so one 429 is followed by no
other instead of a storm of them. It applies even with no rate configured.

**Priority** (a job's 0..9, higher first): a caller refused a slot is registered as a
*waiter* with its priority, its place in line (priority, then first refusal) and the time
it was told to come back. A caller is granted a slot only if the slot is free *and* no
waiter of a higher priority is due within ``hold_seconds`` (one emission interval, at least
2 s): the slot is held for the more important job that is about to come back, instead of
going to whoever asks first. A refused caller is told to come back at its estimated turn:
when the next slot frees, plus one interval per waiter ahead of it in line, so the line
comes back spread out rather than all at once, and equals come back roughly in the order
they first asked (no slot is held for an equal: a late one would idle it). A waiter that
does not come back within ``grace_seconds`` of its due time (cancelled, its worker died) is
forgotten and holds nothing; ``forget`` removes one at once. Strict priority: a stream of
high-priority jobs can keep low-priority ones waiting, as the queue's own priorities do.

**Redis unavailable**: fail closed. ``acquire`` answers ``Wait(UNAVAILABLE_WAIT_SECONDS,
"unavailable")``: a paid call is never made without the shared limit (a burst from every
worker at once is what this module exists to prevent), and since the broker is usually
the same Redis, nothing else would run meanwhile either. ``release``, ``renew`` and
``penalize`` log and carry on (a lease then expires by itself). Every command has a bounded
timeout (REDIS_TIMEOUT_SECONDS) and is retried once, without backoff.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings

from jobs.spend import metrics
from snapasset.core.redis_clients import redis_client

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

# The limiter's period is 1/60 longer than the provider's (61 s for a minute), see the
# module docstring.
PERIOD_MARGIN = 61.0 / 60.0
REDIS_TIMEOUT_SECONDS = 0.5
UNAVAILABLE_WAIT_SECONDS = 5.0
# Shortest wait answered (a countdown shorter than this is a busy loop through the broker),
# unless calls are closer together than this.
MIN_WAIT_SECONDS = 0.25
# A slot is held for a higher-priority waiter due within max(T, this).
MIN_HOLD_SECONDS = 2.0
# A waiter late by more than max(2 x hold, this) is forgotten.
MIN_GRACE_SECONDS = 10.0
# With only a concurrency cap, a refused caller looks again this soon (calls end any time).
CONCURRENCY_RECHECK_SECONDS = 2.0
# A 429 without retry-after blocks for max(T, this).
DEFAULT_PENALTY_SECONDS = 5.0
# Waiters ahead of a caller that are looked at for a hold (the line's head matters).
HOLD_SCAN_LIMIT = 200
# Keys of an idle limiter disappear after a day.
KEY_TTL_SECONDS = 86400

Reason = Literal["rate", "concurrency", "penalty", "priority", "unavailable"]


@dataclass(frozen=True)
class Grant:
    """A slot: make the call now, then ``release`` it. ``lease`` is the concurrency lease
    (None without a concurrency cap)."""

    lease: str | None = None


@dataclass(frozen=True)
class Wait:
    """No slot: come back in ``seconds``. ``reason`` says what was full."""

    seconds: float
    reason: Reason


# Every script's first lines: ARGV[1] is the time (seconds), or "" for Redis's own clock.
_NOW = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: tat, blocked, leases, line, due.  ARGV: see ProviderLimiter.acquire.
# Returns {granted (0/1), wait in ms, reason}. Times are written with %.17g: Lua's tostring
# keeps 14 digits, which would move a timestamp by up to 0.1 ms.
_ACQUIRE = (
    _NOW
    + """local waiter = ARGV[2]
local priority = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local tolerance = tonumber(ARGV[5])
local max_concurrent = tonumber(ARGV[6])
local lease_seconds = tonumber(ARGV[7])
local lease_id = ARGV[8]
local hold = tonumber(ARGV[9])
local grace = tonumber(ARGV[10])
local min_wait = tonumber(ARGV[11])
local recheck = tonumber(ARGV[12])
local scan_limit = tonumber(ARGV[13])
local ttl = tonumber(ARGV[14])

-- Waiters that did not come back in time, and leases of calls that never ended.
local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - grace)
for _, name in ipairs(stale) do
  redis.call('ZREM', KEYS[4], name)
  redis.call('ZREM', KEYS[5], name)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)

-- The caller's place in line: by priority (9 first), then by first refusal.
local place = redis.call('ZSCORE', KEYS[4], waiter)
if place then
  place = tonumber(place)
else
  place = (9 - priority) * 1e10 + now
end

-- When a slot is free: after the penalty, the rate's next cell, a concurrency slot.
local free_at = now
local reason = 'rate'
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > free_at then
  free_at = blocked
  reason = 'penalty'
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
-- (a microsecond of float rounding in tat - tolerance is no reason to refuse)
if interval > 0 and tat - tolerance > free_at + 0.000001 then
  free_at = tat - tolerance
  reason = 'rate'
end
if max_concurrent > 0 and redis.call('ZCARD', KEYS[3]) >= max_concurrent then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local conc_free = math.min(tonumber(first[2]), now + recheck)
  if conc_free > free_at then
    free_at = conc_free
    reason = 'concurrency'
  end
end

-- Waiters ahead in line (their count spaces this caller's wait); a slot is held for a
-- waiter of a higher priority that is due soon (never for an equal: that would idle a slot
-- whenever the older of two equals is late).
local ahead = redis.call(
  'ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%.17g', place), 'LIMIT', 0, scan_limit)
local higher = redis.call(
  'ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%.17g', (9 - priority) * 1e10),
  'LIMIT', 0, scan_limit)
local held = false
for _, name in ipairs(higher) do
  local due = tonumber(redis.call('ZSCORE', KEYS[5], name))
  if due and due <= now + hold then
    held = true
    break
  end
end

if free_at <= now and not held then
  if interval > 0 then
    local next_tat = tat + interval
    redis.call('SET', KEYS[1], string.format('%.17g', next_tat),
      'PX', math.ceil((next_tat - now + ttl) * 1000))
  end
  if max_concurrent > 0 then
    redis.call('ZADD', KEYS[3], now + lease_seconds, lease_id)
    redis.call('EXPIRE', KEYS[3], math.ceil(lease_seconds + ttl))
  end
  redis.call('ZREM', KEYS[4], waiter)
  redis.call('ZREM', KEYS[5], waiter)
  return {1, 0, 'granted'}
end

if free_at <= now then reason = 'priority' end
local step = interval
if step <= 0 then
  step = recheck / math.max(1, max_concurrent)
end
local wait = (free_at - now) + #ahead * step
if wait < min_wait then wait = min_wait end
redis.call('ZADD', KEYS[4], place, waiter)
redis.call('ZADD', KEYS[5], now + wait, waiter)
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('EXPIRE', KEYS[5], ttl)
return {0, math.ceil(wait * 1000), reason}
"""
)

# KEYS: tat, blocked.  ARGV: now ("" for Redis's), seconds, tolerance, ttl.
# Returns the blocked-until time (seconds, as a string).
_PENALIZE = (
    _NOW
    + """local until_ = now + tonumber(ARGV[2])
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > until_ then until_ = blocked end
local ttl = tonumber(ARGV[4])
local px = math.ceil((until_ - now + ttl) * 1000)
redis.call('SET', KEYS[2], string.format('%.17g', until_), 'PX', px)
local drained = until_ + tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < drained then
  redis.call('SET', KEYS[1], string.format('%.17g', drained), 'PX', px)
end
return string.format('%.17g', until_)
"""
)

# KEYS: leases.  ARGV: now ("" for Redis's), lease, seconds.  Returns 1 if still held.
_RENEW = (
    _NOW
    + """local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
return 1
"""
)


@dataclass
class ProviderLimiter:
    """The shared limit of one provider account: ``per_minute`` calls per
    ``period_seconds`` (a minute; shorter in tests and benches), 0: no rate limit;
    ``max_concurrent`` 0: no cap (penalties still apply)."""

    name: str
    per_minute: int
    burst: int = 1
    max_concurrent: int = 0
    lease_seconds: float = 300.0
    client: Any = None  # a redis.Redis; default: REDIS_URL with bounded timeouts
    period_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = redis_client(
                timeout=REDIS_TIMEOUT_SECONDS, connect_timeout=REDIS_TIMEOUT_SECONDS, retries=1
            )
        prefix = f"snapasset:limiter:{{{self.name}}}"
        self.keys = [f"{prefix}:{part}" for part in ("tat", "blocked", "leases", "line", "due")]
        self._acquire = self.client.register_script(_ACQUIRE)
        self._penalize = self.client.register_script(_PENALIZE)
        self._renew = self.client.register_script(_RENEW)

    @property
    def interval(self) -> float:
        """Seconds between two calls at the steady rate (0: no rate limit)."""
        if not self.per_minute:
            return 0.0
        return self.period_seconds * PERIOD_MARGIN / self.per_minute

    @property
    def tolerance(self) -> float:
        """How early before its cell a call may go: the burst's (b - 1) T, plus a catch-up of
        min(T / 2, half the period's margin: 0.5 s a minute), so that a caller back a little
        late does not push every later call back. A catch-up below the margin keeps every
        window of the period at the limit, with the other half left for network jitter."""
        margin = self.period_seconds * (PERIOD_MARGIN - 1)
        return (self.burst - 1) * self.interval + min(self.interval / 2, margin / 2)

    @property
    def min_wait(self) -> float:
        return min(MIN_WAIT_SECONDS, self.interval) if self.interval else MIN_WAIT_SECONDS

    @property
    def hold_seconds(self) -> float:
        return max(self.interval, MIN_HOLD_SECONDS)

    @property
    def grace_seconds(self) -> float:
        return max(2 * self.hold_seconds, MIN_GRACE_SECONDS)

    def acquire(self, *, waiter: str, priority: int = 0, now: float | None = None) -> Grant | Wait:
        """A slot for the caller ``waiter`` (a job id: the same id when it comes back), or
        how long to wait. Never blocks. ``now`` replaces Redis's clock (tests, benches)."""
        lease = uuid.uuid4().hex if self.max_concurrent else None
        args = [
            "" if now is None else repr(now),
            waiter,
            max(0, min(9, priority)),
            self.interval,
            self.tolerance,
            self.max_concurrent,
            self.lease_seconds,
            lease or "",
            self.hold_seconds,
            self.grace_seconds,
            self.min_wait,
            CONCURRENCY_RECHECK_SECONDS,
            HOLD_SCAN_LIMIT,
            KEY_TTL_SECONDS,
        ]
        try:
            granted, wait_ms, reason = self._acquire(keys=self.keys, args=args)
        except Exception:
            logger.warning(
                "rate limiter %s: Redis unavailable; the call waits %.0fs",
                self.name, UNAVAILABLE_WAIT_SECONDS, exc_info=True,
            )  # fmt: skip
            metrics.record_limiter_wait(provider=self.name, reason="unavailable")
            return Wait(UNAVAILABLE_WAIT_SECONDS, "unavailable")
        if granted:
            return Grant(lease=lease)
        wait = Wait(int(wait_ms) / 1000.0, _reason(reason))
        metrics.record_limiter_wait(provider=self.name, reason=wait.reason)
        return wait

    def release(self, decision: Grant | Wait | None) -> None:
        """End a granted call's concurrency lease (anything else: nothing to do)."""
        if not isinstance(decision, Grant) or decision.lease is None:
            return
        try:
            self.client.zrem(self.keys[2], decision.lease)
        except Exception:
            logger.warning(
                "rate limiter %s: could not release a lease; it expires in %.0fs",
                self.name, self.lease_seconds, exc_info=True,
            )  # fmt: skip

    def renew(
        self, grant: Grant, *, seconds: float | None = None, now: float | None = None
    ) -> bool:
        """Extend a lease by ``seconds`` (default lease_seconds) from now; False when it had
        already expired (or Redis is unavailable). No lease: True."""
        if grant.lease is None:
            return True
        args = ["" if now is None else repr(now), grant.lease, seconds or self.lease_seconds]
        try:
            return bool(self._renew(keys=[self.keys[2]], args=args))
        except Exception:
            logger.warning("rate limiter %s: could not renew a lease", self.name, exc_info=True)
            return False

    def penalize(self, retry_after: float | None, *, now: float | None = None) -> float:
        """The provider answered 429: nobody gets a slot for ``retry_after`` seconds (at
        least one interval; DEFAULT_PENALTY_SECONDS when the provider did not say), and
        the bucket is emptied. Returns the seconds blocked from now (0 if Redis failed)."""
        seconds = max(retry_after or DEFAULT_PENALTY_SECONDS, self.interval)
        args = ["" if now is None else repr(now), seconds, self.tolerance]
        try:
            self._penalize(keys=self.keys[:2], args=[*args, KEY_TTL_SECONDS])
        except Exception:
            logger.warning("rate limiter %s: could not record a 429", self.name, exc_info=True)
            return 0.0
        metrics.record_rate_limited(provider=self.name)
        logger.warning(
            "rate limiter %s: the provider answered 429; every call waits %.1fs",
            self.name, seconds,
        )  # fmt: skip
        return seconds

    def forget(self, waiter: str) -> None:
        """Take a waiter out of line (its job was cancelled or failed while delayed)."""
        try:
            pipe = self.client.pipeline()
            pipe.zrem(self.keys[3], waiter)
            pipe.zrem(self.keys[4], waiter)
            pipe.execute()
        except Exception:
            logger.warning("rate limiter %s: could not forget a waiter", self.name, exc_info=True)

    def waiting(self) -> list[tuple[str, int, float]]:
        """The line: (waiter, priority, due time) in order; for the admin and tests."""
        line = self.client.zrange(self.keys[3], 0, -1, withscores=True)
        due = dict(self.client.zrange(self.keys[4], 0, -1, withscores=True))
        return [
            (name.decode(), 9 - int(score // 1e10), float(due.get(name, 0.0)))
            for name, score in line
        ]

    def reset(self) -> None:
        """Forget everything (tests and benches)."""
        self.client.delete(*self.keys)


def _reason(raw: Any) -> Reason:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if text in ("rate", "concurrency", "penalty", "priority"):
        return text  # type: ignore[return-value]
    return "rate"


def default_lease_seconds() -> float:
    """The longest one call can last: the generation and the download of a URL answer
    (each up to OPENAI_TIMEOUT_SECONDS), plus a margin."""
    return 2.0 * settings.OPENAI_TIMEOUT_SECONDS + 30.0


def provider_limiter() -> ProviderLimiter:
    """The limiter of the configured OpenAI account, from the settings (one per process
    and configuration)."""
    return _limiter(
        settings.REDIS_URL,
        settings.OPENAI_IMAGES_PER_MINUTE,
        settings.OPENAI_IMAGES_BURST,
        settings.OPENAI_MAX_CONCURRENT,
        default_lease_seconds(),
        float(settings.OPENAI_IMAGES_PERIOD_SECONDS),
    )


@functools.cache
def _limiter(
    url: str,
    per_minute: int,
    burst: int,
    max_concurrent: int,
    lease_seconds: float,
    period_seconds: float = 60.0,
) -> ProviderLimiter:
    client: redis.Redis = redis_client(
        url=url, timeout=REDIS_TIMEOUT_SECONDS, connect_timeout=REDIS_TIMEOUT_SECONDS, retries=1
    )
    return ProviderLimiter(
        name="openai",
        per_minute=per_minute,
        burst=burst,
        max_concurrent=max_concurrent,
        lease_seconds=lease_seconds,
        client=client,
        period_seconds=period_seconds,
    )


def prepare_paid_calls(sender: Any = None, **_: Any) -> None:
    """A worker's ``worker_init`` receiver: load the image provider's client code (the
    OpenAI SDK takes most of a second to import and set up) before the pool forks, so that
    no paid call pays it between its grant and reaching the provider. The limiter spaces
    grants; a call that reaches the provider late bunches up with the next one, and only
    half a second a minute is budgeted for that. Workers that do not consume the image
    jobs' queue are left alone (no SDK in their memory)."""
    from jobs.providers import get_provider

    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    consumed = getattr(queues, "consume_from", None)
    if consumed and settings.CELERY_TASK_DEFAULT_QUEUE not in consumed:
        return
    try:
        provider = get_provider()
        warm_up = getattr(provider, "warm_up", None)
        if warm_up is not None:
            warm_up()
    except Exception:
        logger.info("image provider not prepared at worker start", exc_info=True)
