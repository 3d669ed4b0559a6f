"""One access-log line per request, and the request id that ties a request's lines together.

The request id comes from the client's (or the proxy's) ``X-Request-ID`` when it is a sane
token (1..128 characters of letters, digits and ``._:-``), else a new UUID; it goes back in
the response's ``X-Request-ID`` header, onto every log line of the request (a contextvar,
snapasset/core/logs.py) and into the Celery messages the request sends, so the lines of the
job it created carry it too (snapasset/core/receivers.py).

The access line (logger ``snapasset.access``, INFO) says method, path (with its query string,
credentials redacted by the log filters), route (the URL pattern, not the raw path), status,
duration, user id and request id; in JSON each is a field. It
replaces uvicorn's access line (turned off in the logging config). The duration runs until
the response starts: for a stream (SSE, download.zip) that is the time to open it.
HTTP metrics per route and status are django-prometheus's middleware (settings.MIDDLEWARE).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware
from django.utils.functional import SimpleLazyObject, empty

from snapasset.core.logs import current_request_id

REQUEST_ID_HEADER = "X-Request-ID"
# Long enough for the ids of common proxies and tracers, short and plain enough to be safe
# in a log line and a header.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access_logger = logging.getLogger("snapasset.access")


def valid_or_new_request_id(given: str) -> str:
    return given if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def request_id_of(request: HttpRequest) -> str:
    return valid_or_new_request_id(request.headers.get(REQUEST_ID_HEADER, ""))


def log_asgi_answer(scope: Mapping[str, Any], status: int) -> str:
    """The access line of a request answered before Django (the body limit's 413/400);
    returns its request id for the answer's header."""
    given = ""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-request-id":
            given = value.decode("latin-1")
    request_id = valid_or_new_request_id(given)
    access_logger.info(
        "%s %s %s",
        scope.get("method"),
        scope.get("path"),
        status,
        extra={
            "method": scope.get("method"),
            "path": scope.get("path"),
            "route": None,
            "status": status,
            "duration_ms": 0.0,
            "user_id": None,
            "request_id": request_id,
        },
    )
    return request_id


def route_of(request: HttpRequest) -> str | None:
    """The URL pattern that served the request (``/api/jobs/<str:job_id>``), None if none did."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    return "/" + match.route if match.route else match.view_name


def user_id_of(request: HttpRequest) -> int | None:
    """The authenticated user's id, if the request already knows it: DRF sets ``request.user``
    when a view authenticates; a session user not looked up by then is not looked up here
    (that would be a query, and in async code a forbidden one)."""
    user: Any = request.__dict__.get("user")
    if isinstance(user, SimpleLazyObject):
        user = user._wrapped
        if user is empty:
            return None
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return getattr(user, "pk", None)


def _log_access(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    route = route_of(request)
    user_id = user_id_of(request)
    # With its query string, as access logs show it; the log filters redact credentials in
    # it (an SSE stream's ?ticket=).
    path = request.get_full_path()
    access_logger.info(
        "%s %s %s %.1fms",
        request.method,
        path,
        response.status_code,
        duration_ms,
        extra={
            "method": request.method,
            "path": path,
            "route": route,
            "status": response.status_code,
            "duration_ms": duration_ms,
            "user_id": user_id,
        },
    )


@sync_and_async_middleware
def access_log_middleware(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    """First in MIDDLEWARE: the id is set before anything else runs and the time covers all."""

    def begin(request: HttpRequest) -> tuple[str, Any]:
        request_id = request_id_of(request)
        request.request_id = request_id  # type: ignore[attr-defined]
        return request_id, current_request_id.set(request_id)

    def end(
        request: HttpRequest, response: HttpResponseBase, request_id: str, started: float
    ) -> HttpResponseBase:
        response[REQUEST_ID_HEADER] = request_id
        try:
            _log_access(request, response, started)
        except Exception:  # an access line never breaks a response
            logging.getLogger(__name__).warning("could not log the access line", exc_info=True)
        return response

    if iscoroutinefunction(get_response):
        get_async: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = get_response

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            started = time.perf_counter()
            request_id, token = begin(request)
            try:
                response = await get_async(request)
                return end(request, response, request_id, started)
            finally:
                current_request_id.reset(token)

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        request_id, token = begin(request)
        try:
            response = get_response(request)
            return end(request, response, request_id, started)
        finally:
            current_request_id.reset(token)

    return sync_middleware
