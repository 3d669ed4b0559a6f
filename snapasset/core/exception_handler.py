"""The DRF exception handler (settings: REST_FRAMEWORK["EXCEPTION_HANDLER"]): every error an
API view raises becomes JSON ``{error, ...}`` with its status (snapasset.core.openapi's
``ErrorSerializer``). The errors themselves live in ``snapasset.core.exceptions``, which the
worker imports too; this module is the web's only.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from snapasset.core.exceptions import (
    ApplicationError,
    QuotaExceededError,
    TooManyPendingJobsError,
    TransientError,
)

logger = logging.getLogger(__name__)


def _error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, **extra}


def _whole_seconds(retry_after: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(retry_after))


def _too_many_requests(message: str, retry_after: float, **extra: Any) -> Response:
    """429 with a Retry-After header and the same in the body."""
    seconds = _whole_seconds(retry_after)
    return Response(
        _error_body(message, retryAfter=seconds, **extra),
        status=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": str(seconds)},
    )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, TooManyPendingJobsError):
        return _too_many_requests(exc.message, exc.retry_after_seconds)
    if isinstance(exc, QuotaExceededError):
        return _too_many_requests(
            exc.message,
            exc.retry_after,
            limit=exc.limit,
            used=exc.used,
            pending=exc.pending,
            requested=exc.requested,
            resetsAt=exc.resets_at.isoformat(),
        )
    if isinstance(exc, drf_exceptions.Throttled):
        message = "Too many job submissions; slow down"
        return _too_many_requests(message, getattr(exc, "wait", None) or 1)
    if isinstance(exc, ApplicationError):
        return Response(_error_body(exc.message, **exc.extra), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            _error_body("Request body is larger than 1 MiB"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DatabaseError):
        logger.exception("database error while serving %s", context.get("request"))
        return Response(
            _error_body("The database is unavailable; nothing was saved, try again shortly"),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    if isinstance(exc, TransientError):
        # A dependency failed while answering (storage signing a download URL): retrying
        # can help, so 503, with the dependency's own retry hint when it gave one.
        logger.warning("a dependency failed while serving %s: %s", context.get("request"), exc)
        response = Response(
            _error_body("Storage is unavailable; try again shortly"),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        if exc.retry_after is not None:
            response["Retry-After"] = str(_whole_seconds(exc.retry_after))
        return response
    if isinstance(exc, Http404):
        return Response(_error_body("Not found"), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, drf_exceptions.ValidationError):
        detail = exc.detail
        if not isinstance(detail, dict):
            detail = {"non_field_errors": detail}
        return Response(
            _error_body("Invalid request", details=detail), status=status.HTTP_400_BAD_REQUEST
        )

    drf_response = drf_exception_handler(exc, context)
    if drf_response is None:
        return None
    drf_detail = getattr(exc, "detail", None)
    drf_response.data = _error_body(str(drf_detail) if drf_detail is not None else "Error")
    return drf_response
