"""Settings of the benchmark processes: the project's settings plus the bench-only baseline
views (bench/urls.py) and no-op task (bench/tasks.py). Never used in production."""

from snapasset.settings import *  # noqa: F401,F403
from snapasset.settings import INSTALLED_APPS

ROOT_URLCONF = "bench.urls"
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
