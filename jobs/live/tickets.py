"""Stream tickets: how a browser app on another origin opens a live-event stream.

A browser's EventSource cannot send an `Authorization` header, and API tokens are never
read from a URL (long-lived secrets end up in proxy logs and browser history). So the app
asks for a ticket with its usual credentials (POST /api/sse/tickets) and opens
`/api/sse/jobs/{jobId}?ticket=...`. A ticket is:

- unguessable: 32 random bytes (``secrets.token_urlsafe``);
- short-lived: SSE_TICKET_TTL_SECONDS (30 s by default) to be presented;
- single-use: the first presentation deletes it (GETDEL, atomic), whatever its outcome, so
  two requests racing with one ticket cannot both get in;
- bound to one channel (a job's stream or the stats stream) and one user: the stream runs
  as that user, through the same permission checks as a stream opened with a header.

Tickets live in Redis (the live-events Redis), so any web process can redeem what another
one issued. Only the ticket's SHA-256 digest is a key there: a Redis dump, MONITOR or
SLOWLOG never shows a usable ticket.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, status
from rest_framework.request import Request

from snapasset.core.authentication import TokenAuthentication
from snapasset.core.redis_clients import redis_client

TICKET_PARAMETER = "ticket"
TICKET_KEY_PREFIX = "snapasset:sse-ticket:"
# token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
TICKET_BYTES = 32
TICKET_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
INVALID_TICKET = (
    "Invalid, expired or already used stream ticket; ask POST /api/sse/tickets for a new one."
)


class TicketStoreUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Live events are unavailable (Redis); try again shortly."


@dataclass(frozen=True)
class StreamTicket:
    """A ticket as issued (``value`` is shown once, to the caller) or as redeemed."""

    value: str
    channel: str
    user_id: int
    expires_in: int


def _key(ticket: str) -> str:
    return TICKET_KEY_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


def _redis() -> Any:
    # Short timeouts: a request must not hang on Redis; one immediate retry covers a stale
    # pooled connection (the profile of the event publisher, so one pool for both).
    return redis_client(
        timeout=2, connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT, retries=1
    )


def stream_ticket_issue(*, user: Any, channel: str) -> StreamTicket:
    """A new ticket for ``user`` to open ``channel`` once, within the TTL. The caller has
    checked that the user may read the channel; the stream checks it again."""
    import redis

    ttl = int(settings.SSE_TICKET_TTL_SECONDS)
    value = secrets.token_urlsafe(TICKET_BYTES)
    record = json.dumps({"user": user.pk, "channel": channel})
    try:
        _redis().set(_key(value), record, ex=ttl, nx=True)
    except redis.RedisError:
        raise TicketStoreUnavailable() from None
    return StreamTicket(value=value, channel=channel, user_id=user.pk, expires_in=ttl)


def stream_ticket_redeem(*, ticket: str, channel: str) -> tuple[Any, StreamTicket]:
    """The user of a valid ticket for ``channel``; the ticket is spent either way.

    ``AuthenticationFailed`` (401) for a ticket that is malformed, unknown, expired, already
    used, issued for another channel, or whose user is gone or inactive: one answer for all,
    so a refusal says nothing about which tickets exist.
    """
    import redis

    if not TICKET_SHAPE.fullmatch(ticket):
        raise exceptions.AuthenticationFailed(INVALID_TICKET)
    try:
        raw = _redis().getdel(_key(ticket))
    except redis.RedisError:
        raise TicketStoreUnavailable() from None
    if raw is None:
        raise exceptions.AuthenticationFailed(INVALID_TICKET)
    record = json.loads(raw)
    if record.get("channel") != channel:
        raise exceptions.AuthenticationFailed(INVALID_TICKET)
    user = get_user_model()._default_manager.filter(pk=record.get("user"), is_active=True).first()
    if user is None:
        raise exceptions.AuthenticationFailed(INVALID_TICKET)
    return user, StreamTicket(value="", channel=channel, user_id=user.pk, expires_in=0)


class StreamTicketAuthentication(authentication.BaseAuthentication):
    """`?ticket=` on a live-event stream. A request that carries one is authenticated by it
    alone (first in the stream views' list): it never falls back to other credentials.

    The view names the channel its URL opens (``ticket_channel(**url_kwargs)``); None means
    the URL opens no channel (a malformed job id), which no ticket matches.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        if TICKET_PARAMETER not in request.query_params:
            return None
        ticket = request.query_params.get(TICKET_PARAMETER, "")
        context = getattr(request, "parser_context", None) or {}
        view = context.get("view")
        channel = view.ticket_channel(**context.get("kwargs", {})) if view is not None else None
        if channel is None:
            raise exceptions.AuthenticationFailed(INVALID_TICKET)
        return stream_ticket_redeem(ticket=ticket, channel=channel)

    def authenticate_header(self, request: Request) -> str:
        # The 401 of a stream names the header scheme, as on every other endpoint.
        return TokenAuthentication.keyword


class StreamTicketScheme(OpenApiAuthenticationExtension):
    target_class = "jobs.live.tickets.StreamTicketAuthentication"
    name = "streamTicket"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "query",
            "name": TICKET_PARAMETER,
            "description": "A stream ticket from POST /api/sse/tickets, for browsers' "
            "EventSource (which cannot send headers): single use, valid for "
            "SSE_TICKET_TTL_SECONDS (30 s by default), for the one stream it was issued for.",
        }
