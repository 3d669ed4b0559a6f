"""The one place the project's `.env` file is read (python-dotenv).

``snapasset/__init__.py`` calls :func:`load` before anything else, so every process that
imports the project reads the file the same way: manage.py, uvicorn (snapasset.asgi),
Celery's worker, beat and Flower (``-A snapasset``), pytest (pytest-django loads the
settings), the embedded Redis and ``make run``'s honcho (through ``python -m snapasset.env``).
The file is ``.env`` beside manage.py; a variable already in the environment wins over it,
so a deployment's environment and ``make``'s own settings are never overridden by the file.
Every variable is described in docs/configuration.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dotenv import load_dotenv

ENV_FILE = Path(__file__).resolve().parent.parent / ".env"


def load() -> None:
    load_dotenv(ENV_FILE, override=False)


def main(argv: list[str]) -> None:
    """``python -m snapasset.env COMMAND...``: run COMMAND with `.env` loaded as above (the
    package's import already did). `make run` starts honcho this way."""
    if not argv:
        sys.exit("usage: python -m snapasset.env COMMAND [ARG...]")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
