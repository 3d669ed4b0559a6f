"""`manage.py cleanup`: the scheduled cleanup by hand, same services, batch after batch."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from cleanup.services import CLEANUP_TYPES, cleanup_batch, default_older_than_days

# A safety stop for a run by hand: 10,000 batches is two million jobs.
MAX_BATCHES = 10_000


class Command(BaseCommand):
    help = (
        "Delete old temporary files, failed/cancelled and expired completed jobs (with their "
        "files) and expired Celery task results, in bounded batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--type", choices=CLEANUP_TYPES, default="all")
        parser.add_argument(
            "--older-than-days",
            type=int,
            default=None,
            help="age limit; default: the configured retention of the type "
            "(with --type all it applies to failed generations, like the API)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print what the first batch would delete and delete nothing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cleanup_type: str = options["type"]
        days = options["older_than_days"]
        if days is None:
            days = default_older_than_days(cleanup_type)
        if days < 0:
            self.stderr.write("--older-than-days must be 0 or more")
            raise SystemExit(2)
        dry_run: bool = options["dry_run"]
        verb = "would delete" if dry_run else "deleted"
        totals = {"files": 0, "jobs": 0, "checkpoints": 0, "task results": 0}
        batches = 0
        while batches < MAX_BATCHES:
            batches += 1
            batch = cleanup_batch(cleanup_type=cleanup_type, older_than_days=days, dry_run=dry_run)
            for path in batch.paths:
                self.stdout.write(f"{verb} file {path}")
            totals["files"] += batch.deleted_files
            totals["jobs"] += batch.deleted_jobs
            totals["checkpoints"] += batch.cleared_checkpoints
            totals["task results"] += batch.deleted_task_results
            if dry_run:
                if batch.more:
                    self.stdout.write("(more remain beyond this first batch)")
                break
            if not batch.more:
                break
        summary = ", ".join(f"{count} {name}" for name, count in totals.items())
        self.stdout.write(
            f"cleanup {cleanup_type} older than {days} days: {verb} {summary} "
            f"in {batches} batch{'es' if batches > 1 else ''}"
        )
