"""A small HTTP load generator: keep-alive clients in their own processes (so the GIL of
the bench does not limit the server), each timing every request."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import time
from dataclasses import dataclass


@dataclass
class LoadResult:
    latencies: list[float]
    elapsed: float
    errors: int

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def _client(
    port: int, path: str, tokens: list[str], body: bytes, requests: int, seconds: float,
    start_at: float, out: multiprocessing.Queue,  # type: ignore[type-arg]
    method: str = "POST",
) -> None:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.perf_counter()
    deadline = began + seconds if seconds else float("inf")
    index = 0
    while (requests and index < requests) or (not requests and time.perf_counter() < deadline):
        token = tokens[index % len(tokens)]
        index += 1
        headers = {"Content-Type": "application/json", "Authorization": f"Token {token}"}
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            response = conn.getresponse()
            response.read()
            ok = response.status in (200, 202)
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if ok:
            latencies.append(time.perf_counter() - t0)
        else:
            errors += 1
    out.put((latencies, time.perf_counter() - began, errors))


def run_load(
    port: int, path: str, tokens: list[str], *, clients: int, requests: int = 0,
    seconds: float = 0.0, body: dict | None = None,  # type: ignore[type-arg]
    method: str = "POST",
) -> LoadResult:  # fmt: skip
    """``requests`` per client, or as many as fit in ``seconds``; POST ``body`` (JSON) or
    GET."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    payload = json.dumps(
        body or {"prompt": "A lighthouse at dusk", "platforms": ["instagram-post"]}
    ).encode()
    start_at = time.time() + 0.3
    procs = []
    for index in range(clients):
        mine = tokens[index::clients] or tokens
        procs.append(
            ctx.Process(
                target=_client,
                args=(port, path, mine, payload, requests, seconds, start_at, out, method),
            )
        )
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    latencies = [x for r in results for x in r[0]]
    return LoadResult(
        latencies=latencies, elapsed=max(r[1] for r in results), errors=sum(r[2] for r in results)
    )
