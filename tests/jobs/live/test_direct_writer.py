"""DirectWriter: the hub writes an event straight to a caught-up client through the ASGI
server's own `send`, and never blocks the hub on a client that reads slowly."""

from __future__ import annotations

import asyncio
from typing import Any

from jobs.live.direct import DirectWriter


class UvicornLikeCycle:
    """Sends as uvicorn's RequestResponseCycle does: waits for the flow-control drain
    first when paused, then writes synchronously."""

    def __init__(self, *, paused: bool) -> None:
        self.paused = paused
        self.written: list[bytes] = []
        self.drained = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if self.paused:
            await self.drained.wait()
        self.written.append(message["body"])


def test_a_caught_up_client_is_written_to_at_once() -> None:
    async def scenario() -> tuple[bool, list[bytes]]:
        cycle = UvicornLikeCycle(paused=False)
        return DirectWriter(cycle.send).write(b"data: 1\n\n"), cycle.written

    assert asyncio.run(scenario()) == (True, [b"data: 1\n\n"])


def test_a_client_whose_buffer_is_full_is_left_to_its_own_stream_with_nothing_written() -> None:
    async def scenario() -> tuple[bool, list[bytes], int]:
        cycle = UvicornLikeCycle(paused=True)
        written = DirectWriter(cycle.send).write(b"data: 1\n\n")
        cycle.paused = False
        cycle.drained.set()
        await asyncio.sleep(0)  # an abandoned send would have written by now
        return written, cycle.written, len(cycle.drained._waiters)

    assert asyncio.run(scenario()) == (False, [], 0)


def test_only_servers_known_to_write_without_suspending_get_a_direct_writer() -> None:
    assert DirectWriter.for_server(UvicornLikeCycle(paused=False).send) is None
    assert DirectWriter.for_server(lambda message: None) is None
