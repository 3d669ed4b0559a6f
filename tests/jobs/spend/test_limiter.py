"""The shared limiter of the image model, on the real Redis of the test run.

Most tests drive it with an explicit clock (``now=``), so a minute of traffic takes
milliseconds; the concurrent, process-kill and provider tests use real time.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jobs.providers.openai import OpenAIProvider
from jobs.spend.limiter import Grant, ProviderLimiter, Wait, provider_limiter
from snapasset.core.exceptions import RateLimitedError
from snapasset.core.redis_clients import redis_client
from tests.conftest import ROOT, child_env, wait_until
from tests.fakes.openai_server import API_KEY, FakeOpenAI

T0 = 1_000_000.0  # an arbitrary start of the explicit clock


@pytest.fixture
def make_limiter() -> Iterator[Any]:
    made: list[ProviderLimiter] = []

    def make(**options: Any) -> ProviderLimiter:
        options.setdefault("per_minute", 60)
        limiter = ProviderLimiter(
            name=f"test-{uuid.uuid4().hex[:8]}", client=redis_client(timeout=2), **options
        )
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.reset()


def grant_times(limiter: ProviderLimiter, *, start: float, seconds: float, step: float) -> list:
    """One caller asking every ``step`` seconds of the explicit clock: its grant times."""
    granted = []
    now = start
    while now < start + seconds:
        if isinstance(limiter.acquire(waiter="caller", now=now), Grant):
            granted.append(now)
        now += step
    return granted


def busiest(times: list[float], window: float) -> int:
    most = 0
    for i, first in enumerate(times):
        most = max(most, sum(1 for t in times[i:] if t < first + window))
    return most


# --- Rate ------------------------------------------------------------------------------------


def test_calls_are_spaced_by_a_minute_and_a_second_over_the_limit(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=60)
    assert limiter.interval == pytest.approx(61 / 60)
    assert limiter.acquire(waiter="a", now=T0) == Grant()
    refused = limiter.acquire(waiter="b", now=T0 + 0.2)
    assert isinstance(refused, Wait) and refused.reason == "rate"
    # A call may catch up by half an interval: the next one may go at T0 + 61/60 - 0.5.
    assert refused.seconds == pytest.approx(61 / 60 - 0.5 - 0.2, abs=0.002)
    assert isinstance(limiter.acquire(waiter="b", now=T0 + 61 / 60 - 0.5), Grant)
    # ... which does not move the schedule: the one after goes at T0 + 2 x 61/60 - 0.5.
    assert isinstance(limiter.acquire(waiter="c", now=T0 + 2 * 61 / 60 - 0.6), Wait)
    assert isinstance(limiter.acquire(waiter="c", now=T0 + 2 * 61 / 60 - 0.5), Grant)


def test_no_sliding_minute_gets_more_calls_than_the_limit(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=20)
    granted = grant_times(limiter, start=T0, seconds=300, step=0.05)
    assert busiest(granted, 60.0) == 20
    assert len(granted) == pytest.approx(300 / (61 / 20), abs=1)


def test_a_burst_lets_that_many_calls_through_after_a_quiet_spell(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=60, burst=3)
    decisions = [limiter.acquire(waiter=f"j{i}", now=T0) for i in range(4)]
    assert [isinstance(d, Grant) for d in decisions] == [True, True, True, False]


def test_without_a_rate_every_call_is_granted(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=0)
    assert all(isinstance(limiter.acquire(waiter=f"j{i}", now=T0), Grant) for i in range(50))


# --- Concurrency -------------------------------------------------------------------------------


def test_the_concurrency_cap_holds_slots_until_released(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=0, max_concurrent=2, lease_seconds=60)
    first = limiter.acquire(waiter="a", now=T0)
    second = limiter.acquire(waiter="b", now=T0)
    assert isinstance(first, Grant) and isinstance(second, Grant) and first.lease != second.lease
    third = limiter.acquire(waiter="c", now=T0 + 1)
    assert isinstance(third, Wait) and third.reason == "concurrency"
    limiter.release(first)
    assert isinstance(limiter.acquire(waiter="c", now=T0 + 2), Grant)


def test_a_lease_nobody_releases_expires(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=0, max_concurrent=1, lease_seconds=30)
    assert isinstance(limiter.acquire(waiter="dies", now=T0), Grant)
    assert isinstance(limiter.acquire(waiter="next", now=T0 + 29), Wait)
    assert isinstance(limiter.acquire(waiter="next", now=T0 + 31), Grant)


def test_a_renewed_lease_lives_on_and_an_expired_one_cannot_be_renewed(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=0, max_concurrent=1, lease_seconds=30)
    grant = limiter.acquire(waiter="slow", now=T0)
    assert isinstance(grant, Grant)
    assert limiter.renew(grant, now=T0 + 25) is True
    assert isinstance(limiter.acquire(waiter="next", now=T0 + 40), Wait)
    assert limiter.renew(grant, now=T0 + 56) is False  # expired at T0 + 55
    assert isinstance(limiter.acquire(waiter="next", now=T0 + 56), Grant)


KILLED_HOLDER = """
import os, signal, sys
import django
django.setup()
from jobs.spend.limiter import Grant, ProviderLimiter
limiter = ProviderLimiter(name=sys.argv[1], per_minute=0, max_concurrent=1, lease_seconds=2)
assert isinstance(limiter.acquire(waiter="holder"), Grant)
print("granted", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_worker_killed_with_sigkill_holding_a_slot_gives_it_back_when_its_lease_ends(
    make_limiter: Any,
) -> None:
    limiter = make_limiter(per_minute=0, max_concurrent=1, lease_seconds=2)
    done = subprocess.run(
        [sys.executable, "-c", KILLED_HOLDER, limiter.name],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == -9 and "granted" in done.stdout, done.stderr
    refused = limiter.acquire(waiter="next")
    assert isinstance(refused, Wait) and refused.reason == "concurrency"
    wait_until(
        lambda: isinstance(limiter.acquire(waiter="next"), Grant),
        timeout=5,
        interval=0.2,
        what="the dead worker's slot to come back",
    )


# --- Penalty -----------------------------------------------------------------------------------


def test_a_429_blocks_everyone_until_its_retry_after_then_one_call_at_a_time(
    make_limiter: Any,
) -> None:
    limiter = make_limiter(per_minute=60, burst=5)
    assert limiter.penalize(10, now=T0) == 10
    refused = limiter.acquire(waiter="a", now=T0 + 4)
    assert isinstance(refused, Wait) and refused.reason == "penalty"
    assert refused.seconds == pytest.approx(6, abs=0.01)
    assert isinstance(limiter.acquire(waiter="a", now=T0 + 10), Grant)
    # The bucket was emptied: no burst of 5 after the block, the next call is spaced.
    assert isinstance(limiter.acquire(waiter="b", now=T0 + 10.1), Wait)


def test_a_longer_penalty_is_not_shortened_by_a_later_shorter_one(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=0)
    limiter.penalize(30, now=T0)
    limiter.penalize(5, now=T0 + 1)
    assert isinstance(limiter.acquire(waiter="a", now=T0 + 20), Wait)
    assert isinstance(limiter.acquire(waiter="a", now=T0 + 30), Grant)


def test_a_429_blocks_even_without_a_configured_rate(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=0)
    limiter.penalize(None, now=T0)  # no retry-after: the default penalty
    refused = limiter.acquire(waiter="a", now=T0 + 1)
    assert isinstance(refused, Wait) and refused.reason == "penalty"


# --- Priority ----------------------------------------------------------------------------------


def test_waiters_are_served_by_priority(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=60)
    assert isinstance(limiter.acquire(waiter="first", now=T0), Grant)
    arrivals = [("low-a", 0), ("high", 9), ("mid", 5), ("low-b", 0), ("high-b", 9)]
    due = {}
    for offset, (name, priority) in enumerate(arrivals):
        now = T0 + 0.1 + offset * 0.01
        decision = limiter.acquire(waiter=name, priority=priority, now=now)
        assert isinstance(decision, Wait)
        due[name] = now + decision.seconds
    assert [name for name, _, _ in limiter.waiting()] == ["high", "high-b", "mid", "low-a", "low-b"]

    # Every caller comes back when told (or later), again and again, until it is served.
    order = []
    now = T0
    pending = dict(due)
    priorities = dict(arrivals)
    while pending:
        name = min(pending, key=lambda n: pending[n])
        now = max(now, pending.pop(name))
        decision = limiter.acquire(waiter=name, priority=priorities[name], now=now)
        if isinstance(decision, Grant):
            order.append(name)
        else:
            pending[name] = now + decision.seconds
    # By priority; equals roughly by arrival (no slot is ever held for an equal).
    assert [priorities[name] for name in order] == [9, 9, 5, 0, 0]


def test_a_free_slot_is_held_for_a_more_important_waiter_about_to_come_back(
    make_limiter: Any,
) -> None:
    limiter = make_limiter(per_minute=60)
    assert isinstance(limiter.acquire(waiter="first", now=T0), Grant)
    told = limiter.acquire(waiter="urgent", priority=9, now=T0 + 0.5)
    assert isinstance(told, Wait)
    # The slot is free at T0 + 1.017; a low-priority newcomer at T0 + 1.1 is refused while
    # the urgent job, due back at about that time, has not come yet.
    refused = limiter.acquire(waiter="newcomer", priority=0, now=T0 + 1.1)
    assert isinstance(refused, Wait) and refused.reason == "priority"
    assert isinstance(limiter.acquire(waiter="urgent", priority=9, now=T0 + 1.3), Grant)


def test_a_waiter_that_never_comes_back_stops_holding_slots(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=60)
    assert isinstance(limiter.acquire(waiter="first", now=T0), Grant)
    assert isinstance(limiter.acquire(waiter="cancelled", priority=9, now=T0 + 0.5), Wait)
    late = T0 + 1.1 + limiter.grace_seconds + 1
    assert isinstance(limiter.acquire(waiter="newcomer", priority=0, now=late), Grant)
    assert [name for name, _, _ in limiter.waiting()] == []


def test_a_forgotten_waiter_holds_nothing(make_limiter: Any) -> None:
    limiter = make_limiter(per_minute=60)
    assert isinstance(limiter.acquire(waiter="first", now=T0), Grant)
    assert isinstance(limiter.acquire(waiter="cancelled", priority=9, now=T0 + 0.5), Wait)
    limiter.forget("cancelled")
    assert isinstance(limiter.acquire(waiter="newcomer", priority=0, now=T0 + 1.1), Grant)


def test_concurrent_callers_get_slots_by_priority_and_never_faster_than_the_rate(
    make_limiter: Any,
) -> None:
    """Twelve jobs (priorities 0..9 mixed) in four threads, real time, 300 calls a minute:
    each asks, sleeps the wait it is told (as a delayed job's countdown would) and asks
    again. Once the line has formed, slots go in priority order, spaced by the interval."""
    limiter = make_limiter(per_minute=300, period_seconds=60)
    jobs = [
        (f"job-{i}", priority) for i, priority in enumerate([0, 9, 3, 7, 0, 5, 9, 1, 4, 8, 2, 6])
    ]
    granted: list[tuple[float, str, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def caller(mine: list[tuple[str, int]]) -> None:
        start.wait()
        due = {name: time.monotonic() for name, _ in mine}
        priorities = dict(mine)
        while due:
            name = min(due, key=lambda n: due[n])
            time.sleep(max(0.0, due[name] - time.monotonic()))
            decision = limiter.acquire(waiter=name, priority=priorities[name])
            if isinstance(decision, Grant):
                with lock:
                    granted.append((time.monotonic(), name, priorities[name]))
                del due[name]
            else:
                due[name] = time.monotonic() + decision.seconds

    threads = [threading.Thread(target=caller, args=(jobs[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(granted) == len(jobs)
    granted.sort()
    # GCRA: the n-th call after any call comes no sooner than n intervals later, less the
    # tolerance (the catch-up lent to late callers), whatever the thread.
    times = [at for at, _, _ in granted]
    for i, first in enumerate(times):
        for n, later in enumerate(times[i + 1 :], start=1):
            assert later - first >= n * limiter.interval - limiter.tolerance - 0.01, times
    # The first slot goes to whoever asks first, before anyone waits; after it, priority.
    after_first = [priority for _, _, priority in granted[1:]]
    assert after_first == sorted(after_first, reverse=True), granted


# --- Redis down, settings, the provider ------------------------------------------------------


def test_with_redis_unreachable_a_paid_call_waits_and_nothing_hangs(settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    limiter = ProviderLimiter(name="down", per_minute=60)  # the production client
    started = time.monotonic()
    decision = limiter.acquire(waiter="a")
    assert isinstance(decision, Wait) and decision.reason == "unavailable"
    assert time.monotonic() - started < 2
    assert limiter.penalize(10) == 0.0  # logged, not raised
    limiter.release(Grant(lease="x"))  # logged, not raised


def test_the_limiter_of_the_settings(settings: Any) -> None:
    settings.OPENAI_IMAGES_PER_MINUTE = 5
    settings.OPENAI_MAX_CONCURRENT = 3
    settings.OPENAI_TIMEOUT_SECONDS = 100
    limiter = provider_limiter()
    assert limiter.per_minute == 5 and limiter.max_concurrent == 3
    assert limiter.interval == pytest.approx(12.2)
    assert limiter.lease_seconds == 230
    assert provider_limiter() is limiter


@pytest.mark.slow
def test_the_limiter_keeps_the_fake_openai_under_its_limit_from_several_threads(
    make_limiter: Any,
) -> None:
    """Three calls per 3-second window, six callers at once: spaced by the limiter, none is
    refused by the fake; without it, the fake answers 429. The fake's window is 0.2 s
    shorter than the limiter's period: over a real minute the limiter keeps 0.5 s for the
    jitter between its grant and the provider's clock, which scaled down to 3 s would be
    25 ms, less than thread scheduling on a loaded machine."""
    fake = FakeOpenAI(images_per_minute=3, window_seconds=2.8).start()
    try:
        provider = OpenAIProvider(api_key=API_KEY, model="gpt-image-2.6-sunburst",
                                  base_url=fake.api_base, timeout_seconds=5)  # fmt: skip
        limiter = make_limiter(per_minute=3, period_seconds=3.0)
        errors: list[BaseException] = []

        def job(name: str) -> None:
            while True:
                decision = limiter.acquire(waiter=name)
                if isinstance(decision, Grant):
                    break
                time.sleep(decision.seconds)
            try:
                provider.generate_image(prompt="A fox", image_type="vivid")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(f"j{i}",)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == [] and fake.rate_limited_at == []
        assert len(fake.accepted_at) == 6 and fake.busiest_window() == 3
        assert fake.per_minute_counts() == [6]

        # Unlimited callers: the fourth call within the window is refused with retry-after.
        fake.accepted_at.clear()
        outcomes = []
        for _ in range(4):
            try:
                provider.generate_image(prompt="A fox", image_type="vivid")
                outcomes.append("ok")
            except RateLimitedError as exc:
                outcomes.append(f"429 retry-after {exc.retry_after}")
        assert outcomes[:3] == ["ok"] * 3 and outcomes[3].startswith("429 retry-after")
    finally:
        fake.stop()
