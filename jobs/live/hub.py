"""The live hub of one web process: a Redis subscriber fans events out to the streams.

Each web process holds ONE Redis pub/sub subscription (``LiveHub``) on the deployment's
live-events channel (``jobs.live.channels.pubsub_channel``). A message names a job channel,
the event's storage id and its JSON; the hub encodes the SSE frame once and hands it to every
stream of that channel in this process, so an event costs one Redis message per process,
not per client. Nothing is polled: a stream sleeps until the hub wakes it (or its keep-alive
timer fires). Every message also nudges the stats broadcaster, which recomputes the counts
for the stats streams.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from jobs.live.channels import STATS_CHANNEL, pubsub_channel
from jobs.live.direct import DirectWriter
from jobs.live.frames import LiveEvent, sse_frame
from snapasset.core.redis_clients import async_redis_client

logger = logging.getLogger(__name__)

# Events queued for one stream before it is told to re-read storage instead (a client that
# reads slower than events come).
MAX_PENDING = 64
HUB_READY_TIMEOUT = 10.0


class Subscriber:
    """One stream's inbox and position. Only touched from the event loop's thread.

    While ``writer`` is set (the stream is caught up and its task is not writing), the hub
    writes the next event straight to the client; otherwise it queues the event and wakes
    the stream's task, which writes it through Django's response.
    """

    __slots__ = ("channel", "items", "resync", "last_id", "writer", "ended", "_waiter")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.items: list[Any] = []  # a deque costs ~760 bytes per stream; this stays short
        self.resync = False
        self.last_id = 0
        self.writer: DirectWriter | None = None
        self.ended = False
        self._waiter: asyncio.Future[None] | None = None

    def deliver(self, event: LiveEvent) -> None:
        writer = self.writer
        if (
            writer is not None
            and event.id == self.last_id + 1
            and not self.items
            and not self.resync
        ):
            if writer.write(event.frame):
                self.last_id = event.id
                if event.final:
                    self.writer = None
                    self.ended = True
                    self._wake()
                return
            self.writer = None  # a slow reader: its task takes over
        self.push(event)

    def push(self, item: Any) -> None:
        if len(self.items) >= MAX_PENDING:
            self.items.clear()
            self.resync = True
        else:
            self.items.append(item)
        self._wake()

    def request_resync(self) -> None:
        self.resync = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until an item, a resync or the end is pending, or ``timeout`` seconds passed."""
        if self.items or self.resync or self.ended:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class StatsBroadcaster:
    """Recomputes the job counts after job events, at most once per interval, and pushes
    them to the stats streams of this process only when they changed."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self._scheduled = False
        self._dirty = False
        self._last_run = 0.0
        self._last_counts: str | None = None

    def nudge(self) -> None:
        if not self.subscribers:
            return
        self._dirty = True
        if self._scheduled:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_run + settings.SSE_STATS_INTERVAL_SECONDS - time.monotonic())
        loop.call_later(delay, lambda: loop.create_task(self._run(), context=contextvars.Context()))

    async def _run(self) -> None:
        # Events that come during the query schedule one more run, an interval after this
        # broadcast: clients never get two within an interval.
        self._dirty = False
        try:
            counts = await sync_to_async(stats_counts, thread_sensitive=False)()
        except Exception:
            logger.warning("could not compute job stats for the stats stream", exc_info=True)
            counts = None
        if counts is not None:
            key = json.dumps(counts, sort_keys=True)
            if key != self._last_counts:
                self._last_counts = key
                self._last_run = time.monotonic()
                item = (key, sse_frame(json.dumps(stats_payload(counts))))
                for subscriber in list(self.subscribers):
                    subscriber.push(item)
        self._scheduled = False
        if self._dirty:
            self.nudge()


def stats_counts() -> dict[str, Any]:
    from jobs.selectors import job_stats

    close_old_connections()
    try:
        return job_stats(user=None)
    finally:
        close_old_connections()


def stats_payload(counts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "stats", **counts, "timestamp": int(time.time() * 1000)}


class LiveHub:
    """The process's one Redis subscription and the streams listening to it."""

    def __init__(self) -> None:
        self.channels: dict[str, set[Subscriber]] = {}
        self.stats = StatsBroadcaster()
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- subscriptions --------------------------------------------------------------------

    def subscribe(self, channel: str) -> Subscriber:
        self._ensure_running()
        subscriber = Subscriber(channel)
        if channel == STATS_CHANNEL:
            self.stats.subscribers.add(subscriber)
        else:
            self.channels.setdefault(channel, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber.channel == STATS_CHANNEL:
            self.stats.subscribers.discard(subscriber)
            return
        subscribers = self.channels.get(subscriber.channel)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self.channels[subscriber.channel]

    async def wait_ready(self) -> None:
        assert self._ready is not None
        await asyncio.wait_for(self._ready.wait(), HUB_READY_TIMEOUT)

    def stream_count(self) -> int:
        return sum(len(s) for s in self.channels.values()) + len(self.stats.subscribers)

    # --- the Redis subscription -----------------------------------------------------------

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and self._loop is loop and not self._task.done():
            return
        self._loop = loop
        self._ready = asyncio.Event()
        # A fresh context: the task outlives the request that happened to start it, and
        # must not inherit that request's thread-sensitive context.
        self._task = loop.create_task(self._run(), context=contextvars.Context())

    async def _run(self) -> None:
        assert self._ready is not None
        backoff = 0.1
        subscribed_before = False
        while True:
            client = async_redis_client(
                client_name=f"snapasset-live-{os.getpid()}", health_check_interval=30
            )
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(pubsub_channel())
                while True:
                    message = await pubsub.get_message(timeout=30)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "message":
                        self._dispatch(message["data"])
                    elif kind == "subscribe":
                        backoff = 0.1
                        self._ready.set()
                        if subscribed_before:
                            # Messages published while we were away are lost to pub/sub;
                            # every stream catches up from storage.
                            logger.info("live events: Redis subscription restored")
                            self._resync_all()
                        subscribed_before = True
            except asyncio.CancelledError:
                raise
            except Exception:
                self._ready.clear()
                logger.warning("live events: Redis subscription lost; retrying", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:
                    pass

    def _dispatch(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            channel = message["c"]
        except (ValueError, KeyError, TypeError):
            logger.warning("live events: ignoring a malformed message")
            return
        self.stats.nudge()
        subscribers = self.channels.get(channel)
        if not subscribers or "d" not in message:
            return
        event_id = message.get("i")
        item = LiveEvent(event_id, sse_frame(message["d"], event_id), message.get("t") == "final")
        for subscriber in list(subscribers):
            subscriber.deliver(item)

    def _resync_all(self) -> None:
        for subscribers in list(self.channels.values()):
            for subscriber in list(subscribers):
                subscriber.request_resync()
        self.stats.nudge()


hub = LiveHub()
