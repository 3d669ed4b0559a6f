"""The old server's two tables, written through PostgREST with the ``supabase`` client.

``generations``: one row per job, its ``id`` the job's generationId (the id the old server
gave the row it inserted at submit and answered as ``generationId``); ``status`` and
``error_message`` move as the job runs, each write conditional on ``updated_at`` being older
than the change's, so a late or retried write never moves a newer status back.
``generated_images``: one row per image, upserted on (generation_id, platform_id), so a
retried or resumed job never duplicates one. docs/operations.md has the schema.

Every write is idempotent: a push that failed half-way is simply pushed again.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import httpx
from django.conf import settings

from jobs.models import Job, JobStatus
from jobs.platforms import PLATFORMS

GENERATIONS = "generations"
GENERATED_IMAGES = "generated_images"
IMAGES_CONFLICT = "generation_id,platform_id"
# PostgreSQL's foreign_key_violation: an image whose generations row does not exist yet.
FOREIGN_KEY_VIOLATION = "23503"
CONNECT_TIMEOUT_SECONDS = 5.0

# The job's status -> the old server's word in generations.status.
STATUS_FOR_JOB_STATUS: dict[str, str] = {
    JobStatus.WAITING: "pending",
    JobStatus.DELAYED: "pending",
    JobStatus.ACTIVE: "processing",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
# Statuses whose write carries the job's images too.
WITH_IMAGES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})

_client: Any = None
_client_pid: int | None = None


def client() -> Any:
    """The supabase client, made on first use in each process (a forked worker child must
    not share its parent's connections). No retries inside the client: the outbox retries."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        from supabase import create_client
        from supabase.lib.client_options import SyncClientOptions

        timeout = httpx.Timeout(
            settings.SUPABASE_SYNC_TIMEOUT_SECONDS,
            connect=min(CONNECT_TIMEOUT_SECONDS, settings.SUPABASE_SYNC_TIMEOUT_SECONDS),
        )
        options = SyncClientOptions(
            httpx_client=httpx.Client(timeout=timeout, follow_redirects=True),
            postgrest_client_timeout=timeout,
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
        )
        _client = create_client(settings.SUPABASE_URL, settings.SUPABASE_SERVICE_KEY, options)
        _client_pid = os.getpid()
    return _client


def reset_client() -> None:
    """Forget the client (tests that point the settings at another fake)."""
    global _client, _client_pid
    _client, _client_pid = None, None


def timestamp(value: datetime) -> str:
    """An ISO 8601 UTC timestamp with microseconds, as PostgREST takes and compares it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generation_row(job: Job, *, status: str, error_message: str, version: datetime) -> dict:
    return {
        "id": str(job.generation_id),
        "user_id": job.owner.get_username() if job.owner is not None else None,
        "prompt": job.prompt,
        "status": status,
        "error_message": error_message or None,
        "created_at": timestamp(job.created_at),
        "updated_at": timestamp(version),
    }


def describe_error(exc: BaseException) -> str:
    """What the admin shows of a failed push: PostgREST's code and message, or the error."""
    from supabase import PostgrestAPIError

    if isinstance(exc, PostgrestAPIError):
        details = f" ({exc.details})" if exc.details else ""
        return f"PostgREST {exc.code}: {exc.message}{details}"
    return f"{exc.__class__.__name__}: {exc}"


def image_rows(job: Job) -> list[dict[str, Any]]:
    return [
        {
            "generation_id": str(job.generation_id),
            "platform_id": image.platform_id,
            "platform_name": PLATFORMS[image.platform_id].name
            if image.platform_id in PLATFORMS
            else image.platform_id,
            "width": image.width,
            "height": image.height,
            "file_size": image.file_size,
            "storage_path": image.storage_path,
            "url": image.url,
        }
        for image in job.images.order_by("id")
    ]


def status_write(job: Job, *, status: str, error_message: str, version: datetime) -> str:
    """Write ``status`` to the job's generations row unless the row already holds a newer
    one; create the row when it does not exist. Returns what happened: ``updated``,
    ``created`` or ``kept-newer``."""
    row = generation_row(job, status=status, error_message=error_message, version=version)
    if _update_if_older(row):
        return "updated"
    # No row older than this change: either there is none (the sync was switched on after
    # the submit, or the row was deleted) or it holds a newer status.
    inserted = (
        client().table(GENERATIONS).upsert(row, on_conflict="id", ignore_duplicates=True).execute()
    )
    if inserted.data:
        return "created"
    # Inserted by someone else meanwhile, or newer: one more conditional write settles it.
    return "updated" if _update_if_older(row) else "kept-newer"


def _update_if_older(row: dict[str, Any]) -> bool:
    changes = {key: row[key] for key in ("status", "error_message", "updated_at")}
    response = (
        client()
        .table(GENERATIONS)
        .update(changes)
        .eq("id", row["id"])
        .or_(f"updated_at.is.null,updated_at.lt.{row['updated_at']}")
        .execute()
    )
    return bool(response.data)


def images_write(job: Job, *, ensure_row: bool = False) -> int:
    """Upsert the job's images (none: nothing to write). Their generations row must exist
    (a foreign key): with ``ensure_row`` (nothing of this job was written yet) it is made
    first, as pending, the status write that follows moving it on; without, it is made only
    when the foreign key refuses the images."""
    rows = image_rows(job)
    if not rows:
        return 0
    if ensure_row:
        _row_ensure(job)
    try:
        _images_upsert(rows)
    except Exception as exc:
        if getattr(exc, "code", None) != FOREIGN_KEY_VIOLATION:
            raise
        _row_ensure(job)
        _images_upsert(rows)
    return len(rows)


def _row_ensure(job: Job) -> None:
    """The job's generations row, inserted as pending unless it exists (then untouched)."""
    placeholder = generation_row(
        job, status=STATUS_FOR_JOB_STATUS[JobStatus.WAITING], error_message="",
        version=job.created_at,
    )  # fmt: skip
    client().table(GENERATIONS).upsert(
        placeholder, on_conflict="id", ignore_duplicates=True
    ).execute()


def _images_upsert(rows: list[dict[str, Any]]) -> None:
    client().table(GENERATED_IMAGES).upsert(
        rows, on_conflict=IMAGES_CONFLICT, returning="minimal"
    ).execute()


def job_write(
    job: Job, *, job_status: str, status: str, error_message: str, version: datetime,
    first_write: bool = False,
) -> str:  # fmt: skip
    """Everything one status change of ``job`` means in the two tables: its images first
    (when it completed or failed), so a reader that sees ``completed`` finds them, then the
    status. ``first_write``: nothing of this job reached the tables yet."""
    if job_status in WITH_IMAGES:
        images_write(job, ensure_row=first_write)
    return status_write(job, status=status, error_message=error_message, version=version)
