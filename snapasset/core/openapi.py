"""What every operation's OpenAPI description shares (drf-spectacular): the error body that
snapasset.core.exceptions answers with, the Retry-After header of a 429, and the mark on
Server-Sent Events operations."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """The body of every 4xx and 503 (``api_exception_handler``)."""

    error = serializers.CharField(help_text="What was wrong, for a person to read.")
    details = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="Validation errors by field name (400).",
    )
    status = serializers.CharField(required=False, help_text="The job's status (400 wrong state).")
    retryAfter = serializers.IntegerField(
        required=False, help_text="Seconds to wait before trying again (429)."
    )
    limit = serializers.IntegerField(
        required=False, help_text="The daily quota of paid generations (429 over quota)."
    )
    used = serializers.IntegerField(
        required=False, help_text="Paid generations made today (429 over quota)."
    )
    pending = serializers.IntegerField(
        required=False, help_text="Queued or running jobs that will pay (429 over quota)."
    )
    requested = serializers.IntegerField(
        required=False, help_text="Paid generations the refused request needed (429 over quota)."
    )
    resetsAt = serializers.DateTimeField(
        required=False, help_text="When the daily quota starts again (429 over quota)."
    )


ERROR_DESCRIPTIONS = {
    400: "Invalid request: `details` names each wrong field; or the job is in the wrong state.",
    401: "No credentials, or invalid ones (token, JWT).",
    403: "Authenticated but not allowed (staff only; or a session request without CSRF token).",
    404: "No such job, or another user's job (never a 403, so existence does not leak).",
    410: "The job's files are no longer in storage (removed by cleanup).",
    413: "Request body over 1 MiB.",
    415: "Request body is not JSON.",
    429: "Too many submissions (rate limit), too many pending jobs (cap) or over the daily "
    "quota of paid generations (the body says limit, used and resetsAt): see Retry-After.",
    503: "A service the request needs (database, JWKS) is unavailable; try again.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Error responses for `extend_schema(responses=...)`; every API operation may answer
    401 (credentials) and 503 (database or JWKS down)."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in sorted({401, 503, *codes})
    }


RETRY_AFTER_HEADER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429],
    required=True,
    description="Seconds to wait before submitting again.",
)


EVENT_STREAM = "text/event-stream"
# On an operation whose success is a stream of Server-Sent Events: a client generator offers
# request/response calls, which would wait for a stream's end; generated clients leave these
# operations out (tests/system/test_client_sdk.py, docs/live-events.md).
EVENT_STREAM_EXTENSION = "x-event-stream"


def mark_event_streams(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: mark every operation whose 2xx answers are all
    `text/event-stream` with ``x-event-stream: true`` (and tag it ``live-events``)."""
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            success = [
                response
                for code, response in operation.get("responses", {}).items()
                if str(code).startswith("2")
            ]
            if success and all(set(r.get("content", {})) == {EVENT_STREAM} for r in success):
                operation[EVENT_STREAM_EXTENSION] = True
                operation["tags"] = ["live-events"]
    return result
