"""Flower's configuration, read by `celery -A snapasset flower` from the working directory.

Flower shows every task's arguments (prompts) and can revoke tasks and shut workers down, so
it refuses to start without basic auth, in development too: set
FLOWER_BASIC_AUTH=user:password (comma-separate several pairs). Flower itself reads every
FLOWER_* variable (FLOWER_PORT, FLOWER_ADDRESS, FLOWER_URL_PREFIX...) before this file runs,
the project's `.env` included (snapasset/env.py loads it when `-A snapasset` is imported).
"""

import os
import sys

from django.conf import settings
from tornado.options import options

from snapasset.env import use_process_metrics

# The project's settings, loaded now: outside development mode they refuse to start with an
# example secret (FLOWER_BASIC_AUTH=admin:change-me of .env.example included).
settings.DEBUG  # noqa: B018

# Flower's own Prometheus metrics (its /metrics: events, task runtimes, workers online) stay
# in its memory, out of the directory the app's /metrics sums; Flower makes them after
# reading this file.
use_process_metrics()

_pairs = [pair for pair in (options.basic_auth or []) if ":" in pair and pair.split(":", 1)[1]]
if not (_pairs or options.auth):
    sys.exit(
        "flower: refusing to start without authentication; "
        "set FLOWER_BASIC_AUTH=user:password (see README, Operations)"
    )

# Defaults beside the environment: the port Flower always uses, and a bounded task memory.
port = int(os.environ.get("FLOWER_PORT", "5555"))
max_tasks = int(os.environ.get("FLOWER_MAX_TASKS", "10000"))
