"""One job's stream: GET /api/sse/jobs/{jobId}, from `connected` (or a replay) to `final`.

Correctness of a job stream (no loss, no duplicates, in order):
1. subscribe to the hub and wait until the Redis subscription is confirmed;
2. then read the storage's current id and the job row (``connected``), or replay the
   events after Last-Event-ID from storage;
3. then deliver live events, skipping ids already sent; an id beyond last+1 means a message
   was missed (or two publishers raced) and the hole is read from storage; after a Redis
   reconnect every stream re-reads storage from its last id.
Events committed before step 2 are in the snapshot; later ones arrive through step 3.

The ids restart at 1 when Redis loses its data (flushed, or restarted empty). A stream whose
position is above the storage's current id (a client's Last-Event-ID from before, or a
connected stream that saw id 7 when the counter went back to 0) would skip every new event,
``final`` included: it notices (an id at or below its position with the storage's current id
below it, a catch-up read that finds the position gone, or a ``final`` it never sent) and
starts over from the job row, as a fresh stream does, so a settled job's stream always ends
with ``final``. An event the worker could not publish at all (Redis did not answer it) is
covered by the row too: a quiet stream looks at its job's row every few keep-alives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from jobs.live.channels import job_channel
from jobs.live.direct import DirectWriter
from jobs.live.frames import KEEP_ALIVE, RETRY, LiveEvent, error_frame, sse_frame
from jobs.live.hub import Subscriber, hub
from jobs.live.publish import job_event_payload, job_final_payload
from jobs.live.storage import stored_events_after

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSnapshot:
    current_id: int
    replay: list[LiveEvent] | None  # None: nothing to resume from (a fresh stream)
    connected: dict[str, Any] | None
    final: dict[str, Any] | None
    missing: bool = False


def job_snapshot(job_id: str, last_event_id: int | None) -> JobSnapshot:
    """Storage position first, then the row: an event committed in between is delivered
    live (same state twice at worst), never skipped. A Last-Event-ID the storage does not
    know (above its current id: the broker lost its data) is a fresh stream."""
    from django_eventstream.utils import get_storage

    from jobs.models import Job

    channel = job_channel(job_id)
    current_id = int(get_storage().get_current_id(channel))
    replay = stored_events_after(channel, last_event_id) if last_event_id is not None else None
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    if job is None:
        return JobSnapshot(current_id, None, None, None, missing=True)
    connected = job_event_payload(job, event_type="connected")
    final = None
    if job.is_finished:
        final = job_event_payload(job, event_type="final") | job_final_payload(job)
    return JobSnapshot(current_id, replay, connected, final)


def job_restart_frames(job_id: str, subscriber: Subscriber) -> tuple[bytes, bool]:
    """The stream's position is gone (the broker lost its data): the job's state from its
    row, as an update (or its final event), at the storage's current id; and whether that
    ended the stream."""
    snapshot = job_snapshot(job_id, None)
    subscriber.last_id = snapshot.current_id
    if snapshot.missing:
        return error_frame(job_id, "Job not found"), True
    if snapshot.final is not None:
        return sse_frame(json.dumps(snapshot.final), snapshot.current_id), True
    update = dict(snapshot.connected or {}, type="update")
    return sse_frame(json.dumps(update), snapshot.current_id), False


# A quiet stream looks at its job's row every this many keep-alives (a minute by default):
# one primary-key read per stream and minute, against an event lost for good.
ROW_CHECK_EVERY_KEEPALIVES = 4


def _row_is_finished(job_id: str) -> bool:
    from jobs.models import FINISHED_STATUSES, Job

    return Job.objects.filter(pk=job_id, status__in=FINISHED_STATUSES).exists()


class PositionLost(Exception):
    """The storage's ids went below this stream's position."""


async def job_event_stream(
    *, job_id: str, last_event_id: int | None, send: Any = None
) -> AsyncIterator[bytes]:
    """The SSE body of one job: connected (or the replay after Last-Event-ID), updates as
    they happen, then final, then the end. ``send`` is the ASGI server's own send of this
    request: with it, the hub writes live events straight to the client (DirectWriter)."""
    channel = job_channel(job_id)
    subscriber = hub.subscribe(channel)
    writer = DirectWriter.for_server(send)
    try:
        try:
            await hub.wait_ready()
        except TimeoutError:
            yield error_frame(job_id, "Live events are unavailable; try again")
            return
        try:
            snapshot = await sync_to_async(job_snapshot)(job_id, last_event_id)
        except Exception:
            # Redis (the storage) did not answer in time: the client reconnects later.
            logger.warning("live events: no snapshot of job %s", job_id, exc_info=True)
            yield error_frame(job_id, "Live events are unavailable; try again")
            return
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
        quiet = 0  # keep-alives since the last event
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
                    body, final = await sync_to_async(job_restart_frames)(job_id, subscriber)
                    yield body
                    if final:
                        return
                    continue
                pending = list(catch_up)
            elif subscriber.items:
                pending, subscriber.items = subscriber.items, []
                quiet = 0
            else:
                quiet += 1
                if quiet % ROW_CHECK_EVERY_KEEPALIVES == 0 and await sync_to_async(
                    _row_is_finished
                )(job_id):
                    # The final event was never published (Redis did not answer the
                    # worker then): the row says the job ended, so end from the row.
                    body, _ = await sync_to_async(job_restart_frames)(job_id, subscriber)
                    yield body
                    return
                yield KEEP_ALIVE
                continue
            try:
                body, final = await frames_after(channel, subscriber, pending)
            except PositionLost:
                body, final = await sync_to_async(job_restart_frames)(job_id, subscriber)
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
    hole read from storage; and whether they end with the final event. PositionLost when
    an event shows that the storage's ids went below the subscriber's position."""
    body = b""
    for event in pending:
        if event.id is not None:
            if event.id <= subscriber.last_id:
                # Already sent (snapshot, replay or a catch-up read), or the ids restarted:
                # a final is never a repeat (the stream ends after sending one).
                if event.final or await sync_to_async(_storage_below)(channel, subscriber):
                    raise PositionLost(channel)
                continue
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


def _storage_below(channel: str, subscriber: Subscriber) -> bool:
    from django_eventstream.utils import get_storage

    return int(get_storage().get_current_id(channel)) < subscriber.last_id
