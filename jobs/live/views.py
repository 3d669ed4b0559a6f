"""The SSE endpoints: GET /api/sse/jobs/{jobId} and GET /api/sse/stats (docs/API.md).

Plain DRF views, so credentials work as on every other endpoint (Token or Bearer header,
or the session cookie of the web page), and refusals are JSON answered BEFORE any event:
401 without credentials, 404 for a job that is not the caller's (the channel manager
decides), 403 for a non-staff stats stream. An EventSource treats any non-200 answer as
final and does not reconnect. The view returns a StreamingHttpResponse over an async
iterator (jobs.live.job_stream, jobs.live.stats_stream), which Django streams under ASGI
(uvicorn) without holding a thread.

The API token is not accepted in the query string: it is long-lived, and URLs end up in
proxy logs and browser history. Browsers on the API's origin use the session; scripts send
the header; an app on another origin asks POST /api/sse/tickets for a single-use ticket and
opens the stream with `?ticket=` (jobs.live.tickets).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlencode

from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django_eventstream.utils import get_channelmanager, get_storage
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from jobs import openapi, selectors
from jobs.live.channels import STATS_CHANNEL, job_channel
from jobs.live.direct import SERVER_SEND_KEY
from jobs.live.job_stream import job_event_stream
from jobs.live.serializers import (
    STREAM_STATS,
    StreamTicketInputSerializer,
    StreamTicketSerializer,
)
from jobs.live.stats_stream import stats_event_stream
from jobs.live.tickets import StreamTicketAuthentication, stream_ticket_issue
from jobs.models import Job
from snapasset.core.exceptions import NotFoundError
from snapasset.core.openapi import errors
from snapasset.core.throttling import StreamTicketRateThrottle


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
    # A `?ticket=` is the request's only credential when present (jobs.live.tickets).
    authentication_classes = [
        StreamTicketAuthentication,
        # api_settings has imported the settings' class paths (the stubs say str).
        *cast("list[type[BaseAuthentication]]", api_settings.DEFAULT_AUTHENTICATION_CLASSES),
    ]

    def ticket_channel(self, **url_kwargs: Any) -> str | None:
        """The channel this URL opens, which a ticket must have been issued for."""
        raise NotImplementedError

    # Errors are JSON whatever the client accepts (an EventSource asks for
    # text/event-stream); the success path is a streaming response, not a DRF Response.
    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        return JSONRenderer(), "application/json"


def _stream_response(description: str) -> dict[Any, Any]:
    return {(200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description=description)}


def _stream_errors(*codes: int) -> dict[Any, Any]:
    """The usual errors; a 401 may also be a refused stream ticket."""
    responses: dict[Any, Any] = errors(*codes)
    unauthorized = responses[401]
    responses[401] = OpenApiResponse(
        unauthorized.response,
        description=f"{unauthorized.description} Or a `ticket` that is unknown, expired, "
        "already used or for another stream (when present, a ticket is the request's only "
        "credential).",
    )
    return responses


LAST_EVENT_ID_PARAMETER = OpenApiParameter(
    "lastEventId",
    OpenApiTypes.INT,
    OpenApiParameter.QUERY,
    required=False,
    description="The id of the last event seen, as the Last-Event-ID header: the stream "
    "replays what followed. For a new EventSource (e.g. with a new ticket), which cannot "
    "set that header.",
)


class JobEventStreamApi(EventStreamApi):
    def ticket_channel(self, **url_kwargs: Any) -> str | None:
        try:
            return job_channel(uuid.UUID(str(url_kwargs.get("job_id"))))
        except ValueError:
            return None

    @extend_schema(
        operation_id="sse_job",
        summary="Live events of one job (Server-Sent Events)",
        parameters=[openapi.JOB_ID_PARAMETER, LAST_EVENT_ID_PARAMETER],
        responses={
            **_stream_response(
                "`data:` JSON {type: connected|update|final|error, jobId, status, progress, ...}; "
                "ends after `final`. Last-Event-ID replays missed events."
            ),
            **_stream_errors(404),
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
    def ticket_channel(self, **url_kwargs: Any) -> str | None:
        return STATS_CHANNEL

    @extend_schema(
        operation_id="sse_stats",
        summary="Live job counts (Server-Sent Events), staff only",
        responses={
            **_stream_response(
                "`data:` JSON {type: stats, imageGeneration, fileCleanup, timestamp} when counts "
                "change (at most once a second), with keep-alive comments."
            ),
            **_stream_errors(403),
        },
    )
    def get(self, request: Request) -> HttpResponseBase:
        if not get_channelmanager().can_read_channel(request.user, STATS_CHANNEL):
            raise PermissionDenied("The stats stream is for staff only")
        return event_stream_response(stats_event_stream())


class StreamTicketApi(APIView):
    """POST /api/sse/tickets: a single-use ticket to open one stream without a header."""

    throttle_classes = [StreamTicketRateThrottle]

    @extend_schema(
        operation_id="sse_tickets_create",
        summary="A single-use ticket to open one live-event stream (for EventSource)",
        description="For a browser app on another origin, whose EventSource cannot send an "
        "`Authorization` header: ask with your usual credentials, then open the returned `url` "
        "(the stream's URL with `?ticket=`) within `expiresIn` seconds. A ticket opens that "
        "one stream once, as you; a reconnect needs a new ticket (add `lastEventId=` to "
        'resume). Body: `{jobId}` for a job\'s stream (owner or staff), `{stream: "stats"}` '
        "for the stats stream (staff).",
        request=StreamTicketInputSerializer,
        responses={201: StreamTicketSerializer, **errors(400, 403, 404, 413, 415, 429)},
    )
    def post(self, request: Request) -> Response:
        body = StreamTicketInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        answer: dict[str, Any] = {"stream": data["stream"]}
        if data["stream"] == STREAM_STATS:
            if not get_channelmanager().can_read_channel(request.user, STATS_CHANNEL):
                raise PermissionDenied("The stats stream is for staff only")
            channel, path = STATS_CHANNEL, reverse("sse-stats")
        else:
            job = selectors.job_get_for_user(job_id=str(data["jobId"]), user=request.user)
            channel = job_channel(job.id)
            path = reverse("sse-job", kwargs={"job_id": str(job.id)})
            answer["jobId"] = str(job.id)
        ticket = stream_ticket_issue(user=request.user, channel=channel)
        answer.update(
            ticket=ticket.value,
            expiresIn=ticket.expires_in,
            url=request.build_absolute_uri(f"{path}?{urlencode({'ticket': ticket.value})}"),
        )
        # A credential: no cache may keep it.
        return Response(
            answer, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"}
        )
