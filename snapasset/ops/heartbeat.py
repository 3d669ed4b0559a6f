"""Worker liveness: each worker writes a Redis key with a TTL; /health and /metrics read them.

The write rides on Celery's own event heartbeat (the ``heartbeat_sent`` signal, every 2 s
from the worker's event loop), so a key is fresh only while the worker's consumer loop is
really turning; a hung or dead worker's key expires after WORKER_HEARTBEAT_TTL_SECONDS.
Reading is one SCAN + MGET on Redis: no broadcast to the workers, no waiting for replies.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings

from snapasset.core.redis_clients import redis_client

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "snapasset:worker:"

_state: dict[str, Any] = {"hostname": None, "queues": []}


def _client() -> redis.Redis:
    # Short timeouts: this runs inside the worker's event loop.
    return redis_client(timeout=1)


def worker_key(hostname: str) -> str:
    return f"{KEY_PREFIX}{hostname}"


def write_heartbeat() -> None:
    hostname = _state["hostname"]
    if not hostname:
        return
    value = json.dumps(
        {
            "hostname": hostname,
            "queues": _state["queues"],
            "pid": os.getpid(),
            "timestamp": int(time.time() * 1000),
        }
    )
    try:
        _client().set(worker_key(hostname), value, ex=settings.WORKER_HEARTBEAT_TTL_SECONDS)
    except Exception:
        logger.warning("could not write the worker heartbeat", exc_info=True)


def on_worker_ready(sender: Any = None, **_: Any) -> None:
    _state["hostname"] = sender.hostname
    _state["queues"] = sorted(queue.name for queue in sender.task_consumer.queues)
    write_heartbeat()
    warn_about_unconsumed_queues()


def warn_about_unconsumed_queues() -> None:
    """Say loudly, at start-up, which of WORKER_QUEUES no live worker consumes (the sweeper
    and cleanup run on `cleanup`: without a consumer they never run)."""
    try:
        workers = read_live_workers(_client())
    except Exception:
        return
    consumed = {queue for worker in workers for queue in worker["queues"]} | set(_state["queues"])
    missing = [queue for queue in settings.WORKER_QUEUES if queue not in consumed]
    if missing:
        logger.warning(
            "no live worker consumes the queue(s) %s: their tasks wait until one does "
            "(cleanup runs the sweeper and the cleanup; start `celery -A snapasset worker "
            "-Q cleanup`, or a worker without -Q, which consumes every queue)",
            ", ".join(missing),
        )


def on_heartbeat_sent(sender: Any = None, **_: Any) -> None:
    write_heartbeat()


def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    hostname = _state["hostname"]
    if not hostname:
        return
    try:
        _client().delete(worker_key(hostname))
    except Exception:
        pass


def read_live_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """The workers whose key has not expired."""
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=100))
    if not keys:
        return []
    workers = []
    for raw in client.mget(keys):
        if raw is None:
            continue
        try:
            worker = json.loads(raw)
        except ValueError:
            continue
        workers.append(
            {
                "name": worker.get("hostname"),
                "queues": worker.get("queues", []),
                "lastSeen": worker.get("timestamp"),
            }
        )
    return sorted(workers, key=lambda w: str(w["name"]))


def main(argv: list[str]) -> int:
    """`python -m snapasset.ops.heartbeat NODE`: exit 0 when that worker's heartbeat is fresh
    (the container health check of a worker; `NODE` as given to `-n`, e.g. images@host)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")
    django.setup()
    if len(argv) != 1:
        print("usage: python -m snapasset.ops.heartbeat NODE_NAME", file=sys.stderr)
        return 2
    alive = bool(_client().exists(worker_key(argv[0])))
    print("alive" if alive else "no heartbeat")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
