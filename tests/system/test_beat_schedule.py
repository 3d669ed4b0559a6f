"""What celery beat runs: the daily cleanup (CLEANUP_CRON) and the every-minute sweeper."""

from __future__ import annotations

import json
import subprocess
import sys

from celery.schedules import crontab

from snapasset.celery import app
from tests.conftest import ROOT


def test_beat_runs_the_cleanup_daily_at_two_and_the_sweeper_every_minute() -> None:
    schedule = app.conf.beat_schedule
    daily = schedule["cleanup-daily"]
    assert daily["task"] == "cleanup.scheduled_cleanup"
    assert daily["schedule"] == crontab(minute="0", hour="2")
    sweep = schedule["jobs-sweep"]
    assert sweep["task"] == "jobs.sweep"
    assert sweep["schedule"] == 60.0
    app.loader.import_default_modules()
    for entry in schedule.values():
        assert entry["task"] in app.tasks


def test_scheduled_tasks_go_to_the_cleanup_queue_and_results_expire() -> None:
    router = app.amqp.router
    for name in ("cleanup.scheduled_cleanup", "cleanup.run_cleanup", "celery.backend_cleanup"):
        assert router.route({}, name)["queue"].name == "cleanup"
    # The sweeper too: an image backlog must never delay it (issue 5).
    assert router.route({}, "jobs.sweep")["queue"].name == "cleanup"
    assert app.conf.result_expires == 7 * 24 * 3600


def test_the_cleanup_time_comes_from_CLEANUP_CRON() -> None:
    code = (
        "import json; from snapasset.celery import app; "
        "s = app.conf.beat_schedule['cleanup-daily']['schedule'];"
        "print(json.dumps([sorted(s.minute), sorted(s.hour), sorted(s.day_of_week)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        env={"CLEANUP_CRON": "30 3 * * 1-5", "PATH": "/usr/bin:/bin", "LOG_TO_FILES": "false",
             "DEBUG": "true"},
    )  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[30], [3], [1, 2, 3, 4, 5]]
