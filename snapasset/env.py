"""The one place the project's `.env` file is read (python-dotenv).

``snapasset/__init__.py`` calls :func:`load` before anything else, so every process that
imports the project reads the file the same way: manage.py, uvicorn (snapasset.asgi),
Celery's worker, beat and Flower (``-A snapasset``), pytest (pytest-django loads the
settings), the embedded Redis and ``make run``'s honcho (through ``python -m snapasset.env``).
The file is ``.env`` beside manage.py; a variable already in the environment wins over it,
so a deployment's environment and ``make``'s own settings are never overridden by the file.
Every variable is described in docs/configuration.md.

It also switches prometheus_client to multiprocess mode (:func:`use_multiprocess_metrics`),
which must happen before the first metric exists in every process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent
ENV_FILE = BASE_DIR / ".env"


def load() -> None:
    load_dotenv(ENV_FILE, override=False)


def use_multiprocess_metrics() -> Path:
    """Every SnapAsset process writes its Prometheus counters to PROMETHEUS_MULTIPROC_DIR
    (default ``$SNAPASSET_VAR_DIR/metrics``), where /metrics sums them.

    prometheus_client chooses between per-process memory and those files once, when it is
    first imported (``values.ValueClass``), and a metric keeps what was chosen when it was
    made. The variable must therefore be in the environment before that import, and in a
    Celery process it is not in our hands: ``celery`` loads its command plugins (Flower's
    imports prometheus_client) before it reads ``-A snapasset``. So the variable is set here,
    as early as the project runs, and the choice is made again if prometheus_client came
    first: our metrics, all made later (jobs.metrics, the HTTP middleware), then use the files.
    """
    var_dir = Path(os.environ.get("SNAPASSET_VAR_DIR") or BASE_DIR / "var")
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or var_dir / "metrics")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if "prometheus_client.values" in sys.modules:
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.get_value_class()
    return path


def use_process_metrics() -> None:
    """The opposite, for Flower: its own metrics (its /metrics) stay in its memory, out of
    the directory that the app's /metrics sums (flowerconfig.py calls this before Flower
    makes them)."""
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from prometheus_client import values

    values.ValueClass = values.MutexValue


def main(argv: list[str]) -> None:
    """``python -m snapasset.env COMMAND...``: run COMMAND with `.env` loaded as above (the
    package's import already did). `make run` starts honcho this way."""
    if not argv:
        sys.exit("usage: python -m snapasset.env COMMAND [ARG...]")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
