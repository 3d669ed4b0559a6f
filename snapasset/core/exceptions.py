"""One error family for the whole project.

API errors (``ApplicationError`` and subclasses) carry an HTTP status and a message a client
can read; ``snapasset.core.exception_handler`` turns them into JSON. Pipeline errors
(``JobError``) know whether retrying can help: ``TransientError`` (network, timeout, 429, 5xx)
is retried with backoff, ``PermanentError`` fails the job at once.

The worker raises and catches these too, so this module imports no part of the web stack
(DRF and what its settings load: a worker process would carry them for nothing;
tests/core/test_worker_imports.py).
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from http import HTTPStatus
from typing import Any


class ApplicationError(Exception):
    """An error a client caused or must know about; answered as JSON ``{error, ...}``."""

    status_code: int = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class PermissionDeniedError(ApplicationError):
    """The caller is known but may not do this (a user naming another user's userId)."""

    status_code = HTTPStatus.FORBIDDEN


class NotFoundError(ApplicationError):
    status_code = HTTPStatus.NOT_FOUND


class InvalidStateError(ApplicationError):
    """The job is not in a state that allows the operation (result of a running job...)."""


class GoneError(ApplicationError):
    """The resource existed but its content is no longer kept (files removed by cleanup)."""

    status_code = HTTPStatus.GONE


class TooManyPendingJobsError(ApplicationError):
    status_code = HTTPStatus.TOO_MANY_REQUESTS
    # When to try again is unknown (it depends on the user's queued jobs); a short job
    # takes about this long, so a client polling at this pace wastes little.
    retry_after_seconds = 10


class QuotaExceededError(ApplicationError):
    """The owner's daily quota of paid generations would be exceeded (jobs/spend/quotas.py).
    Answered 429 with the limit, what was used and when it resets, and Retry-After."""

    status_code = HTTPStatus.TOO_MANY_REQUESTS

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
