"""Live streams (SSE) of one web process: a Redis subscriber fans events out to the streams.

Each web process holds ONE Redis pub/sub subscription (``LiveHub``) on the deployment's
live-events channel (``jobs.events.pubsub_channel``). A message names a job channel, the
event's storage id and its JSON; the hub encodes the SSE frame once and hands it to every
stream of that channel in this process, so an event costs one Redis message per process,
not per client. Nothing is polled: a stream sleeps until the hub wakes it (or its keep-alive
timer fires).

Why not django-eventstream's own ``events`` view and ``RedisListener`` (5.3.4, read before
writing this): its listener subscribes on a fixed channel shared by every deployment on the
Redis server, dies for good on a dropped connection (events are then lost until reconnect),
starts subscribing only with the first client (a gap for events sent meanwhile), and its
stream re-reads storage whenever an event arrives during its first read; it also has no
`connected`/`final` semantics, no end of stream, and answers forbidden as a 200 stream.
Its storage (ids per channel, no holes) and channel manager are used as they are.

Correctness of a job stream (no loss, no duplicates, in order):
1. subscribe to the hub and wait until the Redis subscription is confirmed;
2. then read the storage's current id and the job row (``connected``), or replay the
   events after Last-Event-ID from storage;
3. then deliver live events, skipping ids already sent; an id beyond last+1 means a message
   was missed (or two publishers raced) and the hole is read from storage; after a Redis
   reconnect every stream re-reads storage from its last id.
Events committed before step 2 are in the snapshot; later ones arrive through step 3.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from jobs import events

logger = logging.getLogger(__name__)

# Events queued for one stream before it is told to re-read storage instead (a client that
# reads slower than events come).
MAX_PENDING = 64
# Most events replayed from storage in one read (a job has ~10).
REPLAY_LIMIT = 1000
HUB_READY_TIMEOUT = 10.0
KEEP_ALIVE = b": keep-alive\n\n"
# snapasset.asgi puts the server's own `send` in the scope of SSE requests under this key:
# Django hands views the request's scope, not `send`.
SERVER_SEND_KEY = "snapasset.server_send"
# ASGI servers whose `send` suits DirectWriter (module prefixes of the protocol class).
DIRECT_WRITE_SERVERS = ("uvicorn.protocols.http.",)
RETRY = b"retry: 3000\n\n"


def sse_frame(data: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {data}\n\n".encode()


@dataclass(frozen=True, slots=True)
class LiveEvent:
    id: int | None
    frame: bytes
    final: bool


class DirectWriter:
    """Writes SSE frames to one client straight from the hub, without waking its stream.

    Delivering an event through the stream's own task costs a task wake-up, a trip through
    Django's streaming response (three nested async iterators) and a keep-alive timer per
    event, for every client; with 1,000 clients on a job that is most of the web process's
    CPU per event (bench/sse.py). The hub instead calls the ASGI server's ``send`` itself and
    drives it to completion on the spot.

    That needs a ``send`` that finishes without suspending when it can write, and that
    suspends before writing anything when it cannot (the client reads too slowly and the
    server's write buffer is full): uvicorn's does both (its only await is the flow-control
    drain at the top). ``for_server`` accepts only such a ``send``; a stream without a writer,
    or whose write would block, is served through its own task as before.
    """

    __slots__ = ("_send",)

    def __init__(self, send: Callable[[dict[str, Any]], Coroutine[Any, Any, None]]) -> None:
        self._send = send

    @classmethod
    def for_server(cls, send: Any) -> DirectWriter | None:
        owner = getattr(send, "__self__", None)
        if owner is None or not type(owner).__module__.startswith(DIRECT_WRITE_SERVERS):
            return None
        return cls(send)

    def write(self, frame: bytes) -> bool:
        """True once written; False when the write would block (nothing was written)."""
        step = self._send({"type": "http.response.body", "body": frame, "more_body": True})
        try:
            step.send(None)
        except StopIteration:
            return True
        except Exception:
            logger.debug("live events: direct write failed", exc_info=True)
            return False
        step.close()  # suspended in the flow-control wait, before writing anything
        return False


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
        if channel == events.STATS_CHANNEL:
            self.stats.subscribers.add(subscriber)
        else:
            self.channels.setdefault(channel, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber.channel == events.STATS_CHANNEL:
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
        from redis.asyncio import Redis

        assert self._ready is not None
        backoff = 0.1
        subscribed_before = False
        while True:
            client = Redis(
                **settings.EVENTSTREAM_REDIS,
                health_check_interval=30,
                client_name=f"snapasset-live-{os.getpid()}",
            )
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(events.pubsub_channel())
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


# --- Job streams --------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSnapshot:
    current_id: int
    replay: list[LiveEvent] | None  # None: nothing to resume from (a fresh stream)
    connected: dict[str, Any] | None
    final: dict[str, Any] | None
    missing: bool = False


def stored_events_after(channel: str, last_id: int) -> list[LiveEvent] | None:
    """Stored events after ``last_id``, or None when that id is unknown (expired)."""
    from django_eventstream.storage import EventDoesNotExist
    from django_eventstream.utils import get_storage

    storage = get_storage()
    try:
        stored = storage.get_events(channel, last_id, limit=REPLAY_LIMIT)
    except EventDoesNotExist:
        return None
    return [LiveEvent(e.id, sse_frame(e.data, e.id), e.type == "final") for e in stored]


def job_snapshot(job_id: str, last_event_id: int | None) -> JobSnapshot:
    """Storage position first, then the row: an event committed in between is delivered
    live (same state twice at worst), never skipped."""
    from django_eventstream.utils import get_storage

    from jobs.models import Job
    from jobs.serializers import job_final_payload

    channel = events.job_channel(job_id)
    current_id = int(get_storage().get_current_id(channel))
    replay = stored_events_after(channel, last_event_id) if last_event_id is not None else None
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    if job is None:
        return JobSnapshot(current_id, None, None, None, missing=True)
    connected = events.job_event_payload(job, event_type="connected")
    final = None
    if job.is_finished:
        final = events.job_event_payload(job, event_type="final") | job_final_payload(job)
    return JobSnapshot(current_id, replay, connected, final)


async def job_event_stream(
    *, job_id: str, last_event_id: int | None, send: Any = None
) -> AsyncIterator[bytes]:
    """The SSE body of one job: connected (or the replay after Last-Event-ID), updates as
    they happen, then final, then the end. ``send`` is the ASGI server's own send of this
    request: with it, the hub writes live events straight to the client (DirectWriter)."""
    channel = events.job_channel(job_id)
    subscriber = hub.subscribe(channel)
    writer = DirectWriter.for_server(send)
    try:
        try:
            await hub.wait_ready()
        except TimeoutError:
            yield error_frame(job_id, "Live events are unavailable; try again")
            return
        snapshot = await sync_to_async(job_snapshot)(job_id, last_event_id)
        if snapshot.missing:
            yield error_frame(job_id, "Job not found")
            return
        subscriber.last_id = snapshot.current_id
        if snapshot.replay is not None:
            # Resuming: the client has everything up to last_event_id; send what followed.
            subscriber.last_id = last_event_id or 0
            body = RETRY
            for event in snapshot.replay:
                body += event.frame
                subscriber.last_id = event.id if event.id is not None else subscriber.last_id
                if event.final:
                    yield body
                    return
            yield body
        else:
            yield RETRY + sse_frame(json.dumps(snapshot.connected), snapshot.current_id)
        if snapshot.final is not None:
            yield sse_frame(
                json.dumps(snapshot.final), max(subscriber.last_id, snapshot.current_id)
            )
            return

        keep_alive = settings.SSE_KEEPALIVE_SECONDS
        while True:
            # Caught up, and not writing: the hub may write the next events itself. Our own
            # writes below go through Django's response, so the hub must not write meanwhile.
            subscriber.writer = writer
            await subscriber.wait(keep_alive)
            subscriber.writer = None
            if subscriber.ended:  # the hub wrote the final event
                return
            if subscriber.resync:
                subscriber.resync = False
                subscriber.items.clear()
                catch_up = await sync_to_async(stored_events_after)(channel, subscriber.last_id)
                if catch_up is None:  # the storage lost our position: start over
                    yield error_frame(job_id, "Event history expired; reconnect")
                    return
                pending = list(catch_up)
            elif subscriber.items:
                pending, subscriber.items = subscriber.items, []
            else:
                yield KEEP_ALIVE
                continue
            body, final = await frames_after(channel, subscriber, pending)
            if body:
                yield body
            if final:
                return
    finally:
        hub.unsubscribe(subscriber)


async def frames_after(
    channel: str, subscriber: Subscriber, pending: list[LiveEvent]
) -> tuple[bytes, bool]:
    """The frames of ``pending`` that follow the subscriber's last id, in order, with any
    hole read from storage; and whether they end with the final event."""
    body = b""
    for event in pending:
        if event.id is not None:
            if event.id <= subscriber.last_id:
                continue  # already sent (snapshot, replay or a catch-up read)
            if event.id > subscriber.last_id + 1:
                # A hole: a message was lost, or two publishers raced. Storage has every
                # event up to this id; read them in order.
                filled = await sync_to_async(stored_events_after)(channel, subscriber.last_id)
                for stored in filled or [event]:
                    if stored.id is not None and stored.id <= subscriber.last_id:
                        continue
                    body += stored.frame
                    if stored.id is not None:
                        subscriber.last_id = stored.id
                    if stored.final:
                        return body, True
                continue
            subscriber.last_id = event.id
        body += event.frame
        if event.final:
            return body, True
    return body, False


def error_frame(job_id: str | None, message: str) -> bytes:
    payload: dict[str, Any] = {"type": "error", "error": message}
    if job_id is not None:
        payload["jobId"] = job_id
    return sse_frame(json.dumps(payload))


# --- The stats stream ---------------------------------------------------------------------


async def stats_event_stream() -> AsyncIterator[bytes]:
    """Counts at once, then whenever they change (at most once per interval), with
    keep-alives in between."""
    subscriber = hub.subscribe(events.STATS_CHANNEL)
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
