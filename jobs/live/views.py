"""The SSE endpoints: GET /api/sse/jobs/{jobId} and GET /api/sse/stats (docs/API.md).

Plain DRF views, so credentials work as on every other endpoint (Token or Bearer header,
or the session cookie of the web page), and refusals are JSON answered BEFORE any event:
401 without credentials, 404 for a job that is not the caller's (the channel manager
decides), 403 for a non-staff stats stream. An EventSource treats any non-200 answer as
final and does not reconnect. The view returns a StreamingHttpResponse over an async
iterator (jobs.live.job_stream, jobs.live.stats_stream), which Django streams under ASGI
(uvicorn) without holding a thread.

The API token is not accepted in the query string: it is long-lived, and URLs end up in
proxy logs and browser history. Browsers use the session; scripts send the header.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django_eventstream.utils import get_channelmanager, get_storage
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import PermissionDenied
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from jobs import openapi
from jobs.live.channels import STATS_CHANNEL, job_channel
from jobs.live.direct import SERVER_SEND_KEY
from jobs.live.job_stream import job_event_stream
from jobs.live.stats_stream import stats_event_stream
from jobs.models import Job
from snapasset.core.exceptions import NotFoundError
from snapasset.core.openapi import errors


def event_stream_response(body: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx and similar proxies must pass events through at once, not buffer them.
    response["X-Accel-Buffering"] = "no"
    return response


def parse_last_event_id(request: Request, channel: str) -> int | None:
    """Last-Event-ID header (or ?lastEventId=): our plain ids, or django-eventstream's
    `channel:id` form. Anything unparsable counts as absent (a fresh stream)."""
    raw = request.headers.get("Last-Event-ID") or request.query_params.get("lastEventId")
    if not raw:
        return None
    raw = raw.strip()
    if ":" in raw:
        name, _, raw = raw.rpartition(":")
        if name != channel:
            return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


class EventStreamApi(APIView):
    # Errors are JSON whatever the client accepts (an EventSource asks for
    # text/event-stream); the success path is a streaming response, not a DRF Response.
    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        return JSONRenderer(), "application/json"


def _stream_response(description: str) -> dict[Any, Any]:
    return {(200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description=description)}


class JobEventStreamApi(EventStreamApi):
    @extend_schema(
        operation_id="sse_job",
        summary="Live events of one job (Server-Sent Events)",
        parameters=[openapi.JOB_ID_PARAMETER],
        responses={
            **_stream_response(
                "`data:` JSON {type: connected|update|final|error, jobId, status, progress, ...}; "
                "ends after `final`. Last-Event-ID replays missed events."
            ),
            **errors(404),
        },
    )
    def get(self, request: Request, job_id: str) -> HttpResponseBase:
        try:
            job_id = str(uuid.UUID(job_id))
        except ValueError:
            raise NotFoundError("Job not found") from None
        channel = job_channel(job_id)
        if not get_channelmanager().can_read_channel(request.user, channel):
            raise NotFoundError("Job not found")
        job = Job.objects.filter(pk=job_id).only("id", "status").first()
        if job is None:
            raise NotFoundError("Job not found")
        last_event_id = parse_last_event_id(request, channel)
        if (
            last_event_id is not None
            and job.is_finished
            and last_event_id == int(get_storage().get_current_id(channel))
        ):
            # The client already saw the final event: 204 tells an EventSource to stop
            # reconnecting. An id above the current one is from before the broker lost its
            # data: the stream starts over and ends with final.
            return HttpResponse(status=204)
        return event_stream_response(
            job_event_stream(
                job_id=str(job.id),
                last_event_id=last_event_id,
                send=getattr(request, "scope", {}).get(SERVER_SEND_KEY),
            )
        )


class StatsEventStreamApi(EventStreamApi):
    @extend_schema(
        operation_id="sse_stats",
        summary="Live job counts (Server-Sent Events), staff only",
        responses={
            **_stream_response(
                "`data:` JSON {type: stats, imageGeneration, fileCleanup, timestamp} when counts "
                "change (at most once a second), with keep-alive comments."
            ),
            **errors(403),
        },
    )
    def get(self, request: Request) -> HttpResponseBase:
        if not get_channelmanager().can_read_channel(request.user, STATS_CHANNEL):
            raise PermissionDenied("The stats stream is for staff only")
        return event_stream_response(stats_event_stream())
