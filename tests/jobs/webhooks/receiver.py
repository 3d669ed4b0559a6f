"""A webhook receiver on loopback, as a customer would run one: a threaded HTTP server that
verifies each POST's Standard Webhooks signature with the secret it was given (the
``standardwebhooks`` reference library) and answers from a script."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# An answer: an HTTP status, or HANG (answer only after the sender has timed out).
HANG = "hang"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float
    answered: int | str


@dataclass
class Receiver:
    answers: list[int | str]
    # The secret to verify with, read at each request (the test may learn it late).
    secret: Callable[[], str | None] = lambda: None
    hang_seconds: float = 4.0
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    def next_answer(self) -> int | str:
        index = len(self.requests)
        return self.answers[index] if index < len(self.answers) else self.answers[-1]

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        secret = self.secret()
        if not secret:
            return False
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True


@contextmanager
def running_receiver(
    answers: list[int | str],
    *,
    secret: Callable[[], str | None] = lambda: None,
    path: str = "/hook",
) -> Iterator[Receiver]:
    receiver = Receiver(answers=answers, secret=secret)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with lock:
                answer = receiver.next_answer()
                verified = receiver.verify(body, headers)
                receiver.requests.append(
                    Received(headers, body, verified, time.monotonic(), answer if verified else 401)
                )
            if not verified:
                self._answer(401, b'{"error": "bad signature"}')
                return
            if answer == HANG:
                time.sleep(receiver.hang_seconds)
                answer = 200
            self._answer(int(answer), b'{"ok": false}' if int(answer) >= 300 else b'{"ok": true}')

        def _answer(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the sender gave up (timeout) and closed the connection

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
