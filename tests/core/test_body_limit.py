"""The request-body limit against a real uvicorn: a raw socket client sends far more than
the limit, with and without Content-Length, and counts how much the server took before it
refused (the client's send buffer is kept small, so what it managed to send is what the
server read, plus the kernel's buffers in between)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings

from jobs.models import Job

pytestmark = pytest.mark.e2e

LIMIT = 1024 * 1024
HUGE = 64 * LIMIT
PIECE = 16 * 1024
# What the server may take in beyond the limit before it refuses: uvicorn's own buffer
# (it pauses reading past 64 KiB the application has not consumed) and the kernel's socket
# buffers between the client and uvicorn (a few hundred KiB on loopback).
ONE_READ_BUFFER = 1024 * 1024


@dataclass
class Outcome:
    sent: int  # body bytes (chunk framing included) the client managed to send
    status: int | None
    body: bytes
    closed: bool  # the server closed the connection
    server_wrote: int  # bytes the uvicorn process wrote meanwhile (files, sockets, logs)


def written_bytes(pid: int) -> int:
    """What a process has written so far (write syscalls: files, temp files, sockets)."""
    with open(f"/proc/{pid}/io") as io:
        fields = dict(line.split(": ") for line in io.read().splitlines())
    return int(fields["wchar"])


def pieces(framing: str) -> Iterator[bytes]:
    payload = b"x" * PIECE
    for _ in range(HUGE // PIECE):
        yield payload if framing == "length" else b"%x\r\n%s\r\n" % (PIECE, payload)
    if framing == "chunked":
        yield b"0\r\n\r\n"


def send_huge_body(base: str, pid: int, path: str, framing: str) -> Outcome:
    url = urlsplit(base)
    framing_header = (
        f"Content-Length: {HUGE}" if framing == "length" else ("Transfer-Encoding: chunked")
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
        f"{framing_header}\r\n\r\n"
    ).encode()
    before = written_bytes(pid)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.connect((url.hostname, url.port))
    sock.sendall(head)
    sent = 0
    try:
        for piece in pieces(framing):
            view = memoryview(piece)
            while view:
                readable, writable, _ = select.select([sock], [sock], [], 20)
                if readable:
                    raise StopIteration  # the server answered (or closed): stop sending
                assert writable, "the server neither read nor answered for 20 s"
                n = sock.send(view)
                sent += n
                view = view[n:]
    except (StopIteration, BrokenPipeError, ConnectionResetError):
        pass
    response, closed = b"", False
    sock.settimeout(10)
    try:
        while chunk := sock.recv(65536):
            response += chunk
        closed = True
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass
    sock.close()
    time.sleep(0.2)  # let the server finish writing its log line
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None
    body = response.partition(b"\r\n\r\n")[2]
    return Outcome(sent, status, body, closed, written_bytes(pid) - before)


@pytest.fixture
def web(start_web: Any) -> tuple[str, int]:
    base = start_web()
    return base, start_web.process(base).proc.pid


def test_the_limit_is_the_one_mebibyte_of_the_contract() -> None:
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == LIMIT
    # Django buffers what passes in memory: below this nothing can spill into a temp file.
    assert LIMIT < settings.FILE_UPLOAD_MAX_MEMORY_SIZE


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize(
    "path", ["/api/jobs/generate", "/api/jobs/cleanup", "/admin/login/", "/no/such/page"]
)
def test_a_huge_body_is_refused_413_while_it_is_read_on_every_route(
    web: tuple[str, int], path: str, framing: str
) -> None:
    base, pid = web
    outcome = send_huge_body(base, pid, path, framing)
    print(f"{framing} {path}: client sent {outcome.sent} bytes, server wrote "
          f"{outcome.server_wrote}")  # fmt: skip
    assert outcome.status == 413, outcome.body[:300]
    assert outcome.body.startswith(b'{"error": "Request body is larger than 1024 KiB"')
    assert outcome.closed
    assert outcome.sent < LIMIT + ONE_READ_BUFFER
    if framing == "length":
        # Refused from the header alone: the server read (almost) none of it.
        assert outcome.sent < ONE_READ_BUFFER
    # No temporary file of the body: the process wrote little more than its answer.
    assert outcome.server_wrote < 64 * 1024
    assert not Job.objects.exists()


def test_the_server_keeps_serving_after_refusing(web: tuple[str, int]) -> None:
    base, pid = web
    for framing in ("length", "chunked"):
        assert send_huge_body(base, pid, "/api/jobs/generate", framing).status == 413
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200


def test_a_body_within_the_limit_gets_through(web: tuple[str, int]) -> None:
    base, _ = web
    # Just under the limit, chunked: it reaches the view (401: no credentials), not the 413.
    body = b'{"prompt": "' + b"x" * (LIMIT - 100) + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), PIECE):
            yield body[start : start + PIECE]

    response = httpx.post(f"{base}/api/jobs/generate", content=chunks(), timeout=30)
    assert response.status_code == 401, response.text
    response = httpx.post(f"{base}/api/jobs/generate", content=body, timeout=30)
    assert response.status_code == 401, response.text


def test_an_invalid_content_length_answers_json_400(web: tuple[str, int]) -> None:
    base, _ = web
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /api/jobs/generate HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 400 ")
