"""Direct writing: the hub writes an event straight to a caught-up client's connection."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

# jobs.live.asgi puts the server's own `send` in the scope of SSE requests under this key:
# Django hands views the request's scope, not `send`.
SERVER_SEND_KEY = "snapasset.server_send"
# ASGI servers whose `send` suits DirectWriter (module prefixes of the protocol class).
DIRECT_WRITE_SERVERS = ("uvicorn.protocols.http.",)


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
