"""A loopback HTTP server on a thread of the test process, recording what it was asked.

The fakes bind 127.0.0.1 on a free port, so a worker subprocess reaches them as it would
reach the real service. Subclasses route requests in ``handle(request) -> Reply``.

A client given the base URL ``tagged_url(tag)`` (``/_t/<tag>`` in front of the paths) is
served exactly as one given ``base_url``, and its requests carry ``tag``: the fault campaign
gives each worker process its own tag, so the request log says which process asked what.
Each request records when it started and ended and the status it was answered; ``slow``
adds latency to matching requests for a while (a storage or network slowdown).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TAG_PREFIX = "/_t/"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    tag: str = ""
    started: float = 0.0  # time.time() when the request arrived
    finished: float | None = None  # when the answer was written (or the client gone)
    status: int | None = None  # the status answered

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(
            status=status,
            body=json.dumps(data).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )


@dataclass
class Latency:
    seconds: float
    method: str | None
    path_contains: str
    until: float  # time.time() after which it no longer applies
    tag: str | None = None

    def applies(self, request: Request) -> bool:
        return (
            time.time() < self.until
            and (self.method is None or request.method == self.method)
            and self.path_contains in request.path
            and (self.tag is None or request.tag == self.tag)
        )


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.latencies: list[Latency] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without this, Nagle plus the
            # client's delayed ACK add ~40 ms to every request.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                started = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                path, tag = parts.path, ""
                if path.startswith(TAG_PREFIX):
                    tag, _, rest = path[len(TAG_PREFIX) :].partition("/")
                    path = "/" + rest
                request = Request(
                    method=self.command,
                    path=path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    tag=tag,
                    started=started,
                )
                with fake.lock:
                    fake.requests.append(request)
                    latency = sum(rule.seconds for rule in fake.latencies if rule.applies(request))
                if latency:
                    time.sleep(latency)
                reply = fake.handle(request)
                if reply.delay:
                    time.sleep(reply.delay)
                request.status = reply.status
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)
                finally:
                    request.finished = time.time()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up early (timeout and byte-cap tests) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def tagged_url(self, tag: str) -> str:
        """A base URL whose requests are recorded with ``tag`` (see the module docstring)."""
        return f"{self.base_url}{TAG_PREFIX}{tag}"

    def slow(
        self, seconds: float, *, for_seconds: float, method: str | None = None,
        path_contains: str = "", tag: str | None = None,
    ) -> None:  # fmt: skip
        """Delay matching requests (of one client ``tag``, if given) by ``seconds`` (on top
        of their answer) for a while."""
        with self.lock:
            self.latencies.append(
                Latency(seconds, method, path_contains, time.time() + for_seconds, tag)
            )

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def seen(self, method: str, path_prefix: str = "") -> list[Request]:
        with self.lock:
            return [
                r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            ]
