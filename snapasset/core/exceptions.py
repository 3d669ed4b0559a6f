"""One error family for the whole project, and the DRF handler that turns errors into JSON.

API errors (``ApplicationError`` and subclasses) carry an HTTP status and a message a client
can read. Pipeline errors (``JobError``) know whether retrying can help: ``TransientError``
(network, timeout, 429, 5xx) is retried with backoff, ``PermanentError`` fails the job at once.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import math
import time
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """An error a client caused or must know about; answered as JSON ``{error, ...}``."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class PermissionDeniedError(ApplicationError):
    """The caller is known but may not do this (a user naming another user's userId)."""

    status_code = status.HTTP_403_FORBIDDEN


class NotFoundError(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND


class InvalidStateError(ApplicationError):
    """The job is not in a state that allows the operation (result of a running job...)."""


class GoneError(ApplicationError):
    """The resource existed but its content is no longer kept (files removed by cleanup)."""

    status_code = status.HTTP_410_GONE


class TooManyPendingJobsError(ApplicationError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    # When to try again is unknown (it depends on the user's queued jobs); a short job
    # takes about this long, so a client polling at this pace wastes little.
    retry_after_seconds = 10


class QuotaExceededError(ApplicationError):
    """The owner's daily quota of paid generations would be exceeded (jobs/spend/quotas.py).
    Answered 429 with the limit, what was used and when it resets, and Retry-After."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        used: int,
        pending: int,
        requested: int,
        resets_at: datetime.datetime,
        retry_after: float,
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.used = used
        self.pending = pending
        self.requested = requested
        self.resets_at = resets_at
        self.retry_after = retry_after


class JobError(Exception):
    """A failure while running a job; its subclass says whether a retry could succeed.
    ``request_id`` is the provider's id of the request that failed, when it answered."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id


class TransientError(JobError):
    """Retrying can help (network, timeout, 429, 5xx): the job is retried with backoff."""


class RateLimitedError(TransientError):
    """The provider answered 429 (rate limited, not out of credit): the shared limiter is
    tightened for every worker (jobs/spend/limiter.py ``penalize``)."""


class PaidAnswerNotFetched(TransientError):
    """The image model answered (a paid call) with a link whose download failed for now;
    ``paid_url`` is kept so that the retry downloads it instead of paying again."""

    def __init__(self, message: str, *, url: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.paid_url = url


class PermanentError(JobError):
    """Retrying cannot help (content policy, invalid input): the job fails at once."""


class JobCancelled(Exception):
    """Raised inside the pipeline when the job's cancel flag is seen between steps."""


class LeaseLost(Exception):
    """Raised when another attempt has claimed the job: this one must stop writing."""


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(raw) if divisor == 1.0 else None
            if parsed is None:
                continue
            value = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(value):
            return max(0.0, value)
    return None


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
