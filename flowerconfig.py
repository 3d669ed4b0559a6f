"""Flower's configuration, read by `celery -A snapasset flower` from the working directory.

Flower shows every task's arguments (prompts) and can revoke tasks and shut workers down, so
it refuses to start without basic auth, in development too: set
FLOWER_BASIC_AUTH=user:password (comma-separate several pairs). Flower itself reads every
FLOWER_* variable (FLOWER_PORT, FLOWER_ADDRESS, FLOWER_URL_PREFIX...) before this file runs.
"""

import os
import sys

from tornado.options import options

_pairs = [pair for pair in (options.basic_auth or []) if ":" in pair and pair.split(":", 1)[1]]
if not (_pairs or options.auth):
    sys.exit(
        "flower: refusing to start without authentication; "
        "set FLOWER_BASIC_AUTH=user:password (see README, Operations)"
    )

# Defaults beside the environment: the port Flower always uses, and a bounded task memory.
port = int(os.environ.get("FLOWER_PORT", "5555"))
max_tasks = int(os.environ.get("FLOWER_MAX_TASKS", "10000"))
