"""Metrics on an internal port, without the web process or its auth.

`python -m snapasset.ops.metrics_server [PORT]` serves this machine's metrics (the
PROMETHEUS_MULTIPROC_DIR files plus the cluster state) on METRICS_BIND_ADDRESS; a worker
started with WORKER_METRICS_PORT serves the same from its main process. For machines that
run only workers, and for setups that keep /metrics off the public web port.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)


def serve(port: int) -> None:
    from django.conf import settings
    from prometheus_client import start_http_server

    from snapasset.ops.metrics import build_registry

    start_http_server(port, addr=settings.METRICS_BIND_ADDRESS, registry=build_registry())
    logger.info("metrics on http://%s:%d/metrics", settings.METRICS_BIND_ADDRESS, port)


def start_for_worker(**_: Any) -> None:
    """A worker's `worker_ready` receiver (OpsConfig.ready)."""
    from django.conf import settings

    if not settings.WORKER_METRICS_PORT:
        return
    try:
        serve(settings.WORKER_METRICS_PORT)
    except OSError:
        # Another worker of this machine already serves the same files.
        logger.warning("metrics port %d is taken; not serving", settings.WORKER_METRICS_PORT)


def main(argv: list[str]) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")
    django.setup()
    from django.conf import settings

    serve(int(argv[0]) if argv else settings.WORKER_METRICS_PORT or 9100)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
