"""One run of an image job: claim, generate once (or reuse the kept original), render each
missing platform, store and record it, complete.

The paid call first takes a slot of the image model's shared rate limit
(jobs/spend/limiter.py); with none free the job is delayed until its turn and the attempt is
given back (``outcomes.job_wait_for_slot``), a 429 tightens the limit for every worker, and
every call is recorded in the ledger (jobs/spend/ledger.py). A job asked to ``reuse`` takes
the original of an identical earlier generation of its owner instead of paying.

Every step can be repeated: the image model's answer is kept before anything else happens
to it (its bytes as the checkpoint ``tmp/.../original.*``, or its URL while the download is
not done), so no retry, redelivery or stall recovery pays for it twice; outputs have
deterministic paths and one ``GeneratedImage`` row per platform. The only window left is a
worker killed during the paid call itself (after the count, before the answer is kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from jobs import metrics
from jobs.live.publish import publish_job_event
from jobs.models import GeneratedImage, Job, JobStatus
from jobs.pipeline import CONTENT_TYPES, RenderedImage, decode_image, inspect_image
from jobs.pipeline import render_platforms as render_platforms
from jobs.platforms import PLATFORMS
from jobs.providers import get_provider
from jobs.services.lease import (
    Claim,
    WorkerShuttingDown,
    fenced_update,
    job_claim,
    job_heartbeat,
    job_lease_remaining,
    job_release,
    job_set_progress,
)
from jobs.services.outcomes import (
    job_complete,
    job_fail,
    job_schedule_retry,
    job_wait_for_slot,
)
from jobs.services.outputs import (
    job_has_outputs,
    job_remove_cancelled_outputs,
    output_path,
    source_path,
    storage_prefix,
)
from jobs.services.transitions import lost_claim_error
from jobs.shutdown import worker_is_shutting_down
from jobs.spend.ledger import (
    CallSpec,
    call_spec,
    ledger_call_finished,
    ledger_call_started,
    ledger_record_call,
    outcome_for_error,
)
from jobs.spend.limiter import Wait, provider_limiter
from jobs.spend.models import CallOutcome
from jobs.spend.reuse import reuse_find_original
from jobs.storage import file_with_content_type, recordable_url
from snapasset.core.exceptions import (
    JobCancelled,
    LeaseLost,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from snapasset.core.log_redaction import truncate_prompt

logger = logging.getLogger(__name__)

# Progress milestones of an image job: claimed (lease.PROGRESS_CLAIMED), original ready,
# then the platforms share the rest evenly.
PROGRESS_SOURCE_READY = 30
# Storing the freshly generated original is retried in place (0.5 s, 1 s) before the job
# is given up to a later attempt: until it is stored, a retry would pay the model again.
CHECKPOINT_SAVE_ATTEMPTS = 3
CHECKPOINT_RETRY_MAX_SLEEP_SECONDS = 5.0
DATABASE_UNAVAILABLE = "The database was unavailable; retrying"


class WaitForProviderSlot(Exception):
    """The shared rate limit of the image model has no slot for this job before
    ``seconds`` (``reason``: what is full)."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(f"no provider slot for {seconds:.1f}s ({reason})")
        self.seconds = seconds
        self.reason = reason


def job_run_generation(*, job_id: str) -> float | None:
    """Run (or resume) an image job: generate once, then render each missing platform.

    Returns the countdown in seconds when a transient error left the job ``delayed`` for a
    retry, or when another attempt holds the job and this message should look again after
    its lease (the task sends that message), else None. Permanent errors, cancellation and a
    lost claim end here; a database error is transient (the job is retried); an unexpected
    error fails the job and propagates to be logged.
    """
    claim = job_claim(job_id=job_id)
    if claim is None:
        return _nothing_to_run(job_id)
    job = claim.job
    logger.info(
        "job %s started, attempt %d, %d platforms: %s",
        job_id, job.attempts_made, len(job.platforms), truncate_prompt(job.prompt),
    )  # fmt: skip
    try:
        with job_heartbeat(claim):
            count = _run_generation_steps(claim)
        logger.info("job %s completed with %d images", job_id, count)
    except JobCancelled:
        if job_remove_cancelled_outputs(job, token=claim.token):
            logger.info("job %s cancelled; partial outputs removed", job_id)
        else:
            logger.info(
                "job %s cancelled; partial outputs removed until it was retried (the retried "
                "run keeps the rest)",
                job_id,
            )
    except LeaseLost:
        logger.warning("job %s: claim lost to another attempt; stopping", job_id)
    except WorkerShuttingDown:
        job_release(claim, reason="the worker is shutting down")
    except WaitForProviderSlot as wait:
        logger.info(
            "job %s: waiting %.1fs for a provider slot (%s)", job_id, wait.seconds, wait.reason
        )
        return job_wait_for_slot(claim, seconds=wait.seconds)
    except PermanentError as exc:
        logger.warning("job %s failed permanently: %s", job_id, exc.message)
        job_fail(job_id=job_id, token=claim.token, reason=exc.message)
    except (TransientError, SoftTimeLimitExceeded) as exc:
        message = getattr(exc, "message", "The job took longer than its time limit")
        logger.warning("job %s: transient error: %s", job_id, message)
        return job_schedule_retry(
            job_id=job_id, token=claim.token, reason=message, retry_after=exc_retry_after(exc)
        )
    except DatabaseError:
        # A blip (a dropped connection, a failover, SQLite busy) is not the job's fault.
        logger.warning("job %s: database error; retrying the job", job_id, exc_info=True)
        return _retry_after_database_error(claim)
    except Exception:
        logger.exception("job %s: unexpected error", job_id)
        job_fail(job_id=job_id, token=claim.token, reason="Internal error while generating images")
        raise
    return None


def exc_retry_after(exc: BaseException) -> float | None:
    return getattr(exc, "retry_after", None)


def _nothing_to_run(job_id: str) -> float | None:
    check_back = job_lease_remaining(job_id=job_id)
    if check_back is not None:
        # Another attempt holds the job. It may be a live duplicate, or the message Celery
        # gave back after the pool process running it died (reject_on_worker_lost): look
        # again once its lease has run out instead of waiting for the sweeper.
        logger.info("job %s: held by another attempt; checking back in %.0fs", job_id, check_back)
        return check_back
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    if (
        job is not None
        and job.status == JobStatus.CANCELLED
        and job.claim_token is None
        and job_has_outputs(job)
    ):
        # Cancelled between attempts (waiting or delayed): no attempt is there to remove
        # what the earlier ones made, so this delivery does.
        if job_remove_cancelled_outputs(job, token=None):
            logger.info("job %s cancelled; outputs of earlier attempts removed", job_id)
        return None
    logger.info("job %s: nothing to do (finished or not due)", job_id)
    return None


def _retry_after_database_error(claim: Claim) -> float | None:
    close_old_connections()
    try:
        return job_schedule_retry(
            job_id=str(claim.job.pk),
            token=claim.token,
            reason=DATABASE_UNAVAILABLE,
            retry_after=None,
        )
    except DatabaseError:
        # Still down: the job stays active under this attempt; once its lease runs out the
        # message this returns (or the sweeper) takes it over.
        logger.warning("job %s: database still unavailable", claim.job.pk, exc_info=True)
        return float(settings.JOB_LEASE_SECONDS) + 1.0


def _run_generation_steps(claim: Claim) -> int:
    """Render the missing platforms on IMAGE_RENDER_THREADS threads (the encoders release
    the GIL); storage, the database and events stay on this thread, which records the
    platforms as soon as they are ready, so every finished platform is a checkpoint.
    Platforms whose renders finished together are recorded in one commit."""
    job = claim.job
    # Platform rows exist only once an original was made (a paid call, counted, or one kept
    # as the checkpoint): a job that never had one has no rows to look for (at worst, a
    # platform is rendered again and its row overwritten).
    had_source = bool(job.generation_calls or job.source_path)
    image = decode_image(source_image_bytes(claim))
    done = set(job.images.values_list("platform_id", flat=True)) if had_source else set()
    span = 100 - PROGRESS_SOURCE_READY
    # No query here: the source step's fenced write (or the claim) has just checked that the
    # job is still this attempt's and not cancelled, and the first record checks it again.
    _stop_if_shutting_down(claim)
    todo = [p for p in job.platforms if p not in done]
    renders = _render_missing(job, image, todo)
    ready = getattr(renders, "ready", None)
    try:
        remaining = len(todo)
        while remaining:
            # The render step as the job feels it: the wait for the next finished platform
            # (the threads render ahead while this thread stores the previous ones).
            with metrics.observe_step("render"):
                batch = [next(renders)]
            remaining -= 1
            while remaining and ready is not None and ready():
                batch.append(next(renders))
                remaining -= 1
            _stop_if_shutting_down(claim)
            done.update(platform_id for platform_id, _ in batch)
            # Recording is fenced together with the progress write, which is also the
            # cancel check between steps (JobCancelled or LeaseLost once the job is no
            # longer this attempt's).
            progress = PROGRESS_SOURCE_READY + span * len(done) // len(job.platforms)
            store_and_record(claim, batch, progress=progress, complete=not remaining)
    finally:
        # A cancelled job stops rendering: at most the running renders finish.
        getattr(renders, "close", lambda: None)()
    if not todo:
        job_complete(claim)  # every platform was recorded by earlier attempts
    return len(done)


def _stop_if_shutting_down(claim: Claim) -> None:
    if worker_is_shutting_down():
        raise WorkerShuttingDown(str(claim.job.pk))


def _render_missing(
    job: Any, image: Any, platform_ids: list[str]
) -> Iterator[tuple[str, RenderedImage]]:
    targets = [(p, PLATFORMS[p].width, PLATFORMS[p].height) for p in platform_ids]
    return render_platforms(
        image,
        targets,
        job.output_format,
        threads=settings.IMAGE_RENDER_THREADS,
        png_compress_level=settings.PNG_COMPRESS_LEVEL,
        png_strategy=settings.PNG_COMPRESS_STRATEGY,
    )


def source_image_bytes(claim: Claim) -> bytes:
    """The generated original: from the checkpoint if an earlier attempt made it, else from
    the URL an earlier attempt was answered with, else from one paid call."""
    job = claim.job
    checkpoint = _checkpoint_path(job)
    if checkpoint:
        try:
            with default_storage.open(checkpoint, "rb") as handle:
                data: bytes = handle.read()
        except FileNotFoundError:
            logger.info("job %s: checkpoint %s is gone; generating again", job.id, checkpoint)
        else:
            logger.info("job %s: reusing the generated original from %s", job.id, checkpoint)
            if checkpoint != job.source_path:
                fenced_update(
                    claim, source_path=checkpoint, progress=max(job.progress, PROGRESS_SOURCE_READY)
                )
            return data
    # The cancel and claim check before paying is the fenced count in _generate (a query
    # here would repeat the claim's, made a moment ago).
    _stop_if_shutting_down(claim)
    provider = get_provider()
    paid = _download_paid_answer(claim, provider) if job.source_url else None
    if paid is None and job.reuse:
        paid = _reuse_original(claim, provider)
    data = paid if paid is not None else _generate(claim, provider)
    # Checked before it is kept, so a checkpoint is always a usable image.
    source_format = inspect_image(data)
    with metrics.observe_step("store"):
        path = _save_checkpoint(job, data, source_format)
    fenced_update(
        claim,
        source_path=path,
        source_url="",
        progress=max(job.progress, PROGRESS_SOURCE_READY),
    )
    return data


def _reuse_original(claim: Claim, provider: Any) -> bytes | None:
    """The original of the owner's identical earlier generation (same prompt, style, model
    and size, within REUSE_WINDOW_HOURS), recorded in the ledger as a reuse (no paid call);
    None when there is none."""
    job = claim.job
    spec = call_spec(provider)
    original = reuse_find_original(
        owner=job.owner,
        prompt=job.prompt,
        image_type=job.image_type,
        model=spec.model,
        size=spec.size,
        exclude_job_id=job.pk,
    )
    if original is None:
        return None
    try:
        with default_storage.open(original.source_path, "rb") as handle:
            data: bytes = handle.read()
    except FileNotFoundError:
        logger.info("job %s: the original to reuse is gone; generating", job.id)
        return None
    logger.info("job %s: reusing the original of job %s", job.id, original.job_id)
    ledger_record_call(
        job=job,
        call_number=0,
        outcome=CallOutcome.REUSED,
        spec=CallSpec(
            provider=spec.provider,
            model=original.model,
            size=original.size,
            quality=original.quality,
        ),
        request_id=f"reuse:{original.job_id}",
    )
    return data


def _generate(claim: Claim, provider: Any) -> bytes:
    """The paid call. It takes a slot of the shared rate limit first (none free: the job
    waits for its turn, WaitForProviderSlot); it is counted and written to the ledger
    before it is made (a call that dies half-way may still be billed), and fenced: the
    last check before paying."""
    job = claim.job
    limiter = provider_limiter() if getattr(provider, "paid", False) else None
    decision = None
    if limiter is not None:
        decision = limiter.acquire(waiter=str(job.pk), priority=job.priority)
        if isinstance(decision, Wait):
            raise WaitForProviderSlot(decision.seconds, decision.reason)
    try:
        return _paid_call(claim, provider, limiter)
    finally:
        if limiter is not None:
            limiter.release(decision)


# The paid call's count, fenced (one plain statement: the last check before paying).
_COUNT_CALL_SQL = (
    "UPDATE {job} SET generation_calls = generation_calls + 1"
    " WHERE id = %s AND claim_token = %s AND status = %s RETURNING generation_calls"
)


def _paid_call(claim: Claim, provider: Any, limiter: Any) -> bytes:
    job = claim.job
    uuid_field: Any = Job._meta.get_field("claim_token")
    params = [
        uuid_field.get_db_prep_value(job.pk, connection),
        uuid_field.get_db_prep_value(claim.token, connection),
        str(JobStatus.ACTIVE),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNT_CALL_SQL.format(job=connection.ops.quote_name(Job._meta.db_table)), params
        )
        counted = cursor.fetchone()
    if counted is None:
        raise lost_claim_error(job.pk, claim.token)
    job.generation_calls = counted[0]
    call_number = job.generation_calls
    call = ledger_call_started(job=job, call_number=call_number, spec=call_spec(provider))
    logger.info("job %s: calling the image provider %s", job.id, settings.IMAGE_PROVIDER)
    try:
        with metrics.observe_step("generate"):
            image = provider.generate_image(prompt=job.prompt, image_type=job.image_type)
    except BaseException as exc:
        if isinstance(exc, RateLimitedError) and limiter is not None:
            # The account is over its limit whatever we counted: every worker waits.
            limiter.penalize(exc.retry_after)
        # Answered with a link whose download failed: the image was paid for (the next
        # attempt downloads it, no new call).
        paid_url = bool(getattr(exc, "paid_url", ""))
        ledger_call_finished(
            job=job,
            call_number=call_number,
            outcome=CallOutcome.SUCCEEDED if paid_url else outcome_for_error(exc),
            request_id=getattr(exc, "request_id", None) or "",
            error=str(getattr(exc, "message", exc)),
            call=call,
        )
        _record_call_error(claim, provider, exc)
        raise
    ledger_call_finished(
        job=job, call_number=call_number, outcome=CallOutcome.SUCCEEDED, image=image, call=call
    )
    return bytes(image.data)


def _record_call_error(claim: Claim, provider: Any, exc: BaseException) -> None:
    paid_url = getattr(exc, "paid_url", "")
    if isinstance(exc, TransientError) and paid_url:
        # Paid for, not yet downloaded: the next attempt downloads this URL instead of
        # paying again.
        fenced_update(claim, source_url=paid_url)
    if isinstance(exc, Exception):
        metrics.record_provider_error(provider=getattr(provider, "name", "?"), error=exc)


def _download_paid_answer(claim: Claim, provider: Any) -> bytes | None:
    """The image an earlier attempt paid for, from the URL it was answered with; None when
    that link no longer gives it (expired: the model is asked again). A transient failure
    raises, and the job is retried with the URL kept."""
    job = claim.job
    download = getattr(provider, "download", None)
    if download is None:
        return None
    logger.info("job %s: downloading the image an earlier attempt paid for", job.id)
    try:
        return bytes(download(job.source_url))
    except PermanentError as exc:
        logger.warning("job %s: the paid answer's link failed (%s)", job.id, exc.message)
        fenced_update(claim, source_url="")
        return None


def _checkpoint_path(job: Any) -> str:
    """Where an earlier attempt kept the original, or "". Once the model was ever called for
    this job (or this is not its first attempt), also look in the job's tmp folder: an
    attempt may have stored it and lost its claim (released at shutdown, taken over, or
    killed) before recording it. A released attempt is not counted in attempts_made, so
    the count of paid calls is what says it may be there."""
    if job.source_path or (job.generation_calls == 0 and job.attempts_made <= 1):
        return str(job.source_path)
    try:
        _, names = default_storage.listdir(f"tmp/{storage_prefix(job)}")
    except FileNotFoundError:
        return ""
    originals = sorted(name for name in names if name.startswith("original."))
    return f"tmp/{storage_prefix(job)}/{originals[0]}" if originals else ""


def _save_checkpoint(job: Any, data: bytes, source_format: str) -> str:
    content = file_with_content_type(data, CONTENT_TYPES[source_format])
    for attempt in range(1, CHECKPOINT_SAVE_ATTEMPTS + 1):
        try:
            return default_storage.save(source_path(job, source_format), content)
        except TransientError as exc:
            if attempt == CHECKPOINT_SAVE_ATTEMPTS:
                raise
            delay = min(
                exc.retry_after or 0.5 * 2 ** (attempt - 1), CHECKPOINT_RETRY_MAX_SLEEP_SECONDS
            )
            logger.warning(
                "job %s: storing the original failed (%s); trying again in %.1fs",
                job.id, exc.message, delay,
            )  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")


def render_and_store(
    claim: Claim, rendered: RenderedImage, platform_id: str, *, progress: int
) -> None:
    store_and_record(claim, [(platform_id, rendered)], progress=progress)


def store_and_record(
    claim: Claim,
    renders: list[tuple[str, RenderedImage]],
    *,
    progress: int,
    complete: bool = False,
) -> None:
    """Store the files of finished platforms, then record them in one transaction; with
    ``complete`` (the last platforms of the job), the job's completion is that transaction
    too. When storing one fails, those stored before it are still recorded."""
    job = claim.job
    rows: list[GeneratedImage] = []
    try:
        for platform_id, rendered in renders:
            with metrics.observe_step("store"):
                path = default_storage.save(
                    output_path(job, platform_id),
                    file_with_content_type(rendered.data, rendered.content_type),
                )
            rows.append(
                GeneratedImage(
                    job=job,
                    platform_id=platform_id,
                    width=rendered.width,
                    height=rendered.height,
                    file_size=len(rendered.data),
                    storage_path=path,
                    url=recordable_url(default_storage, path),
                    format=rendered.format,
                )
            )
    except Exception:
        if rows:  # each platform stored is a checkpoint, whatever happens to the next one
            _record_images(claim, rows, progress=job.progress, complete=False)
        raise
    _record_images(claim, rows, progress=progress, complete=complete)


def _record_images(
    claim: Claim, rows: list[GeneratedImage], *, progress: int, complete: bool
) -> None:
    if not complete and connection.vendor == "postgresql":
        _record_batch(claim, rows, progress=progress)
        claim.recorded.extend(rows)
        return
    with transaction.atomic():
        # Fenced: only the attempt holding the claim records the outputs; the fenced update
        # takes the row lock and moves the progress (or completes the job) in the same
        # transaction, and the rows are one upsert. A cancel seen here leaves these files
        # unrecorded: the removal of the cancelled outputs takes them too (it removes every
        # platform's deterministic path).
        if complete:
            # The rows first, so that the final event (built by the move) lists them; a
            # lost claim in the move rolls them back.
            if connection.vendor == "postgresql":
                _record_batch(claim, rows, progress=progress, publish=False)
            else:
                _upsert_images(rows)
            claim.recorded.extend(rows)
            _images_in_hand(claim)
            job_complete(claim)
        else:
            job_set_progress(claim, progress)
            _upsert_images(rows)


# A batch's record as ONE statement (PostgreSQL): the fenced progress move, then the rows'
# upsert only if it matched (so a lost claim or a cancel records nothing), autocommitted.
_RECORD_SQL = """
WITH moved AS (
    UPDATE {job} SET progress = %s, heartbeat_at = %s, updated_at = %s
    WHERE id = %s AND claim_token = %s AND status = %s
    RETURNING id
)
INSERT INTO {image} (job_id, platform_id, width, height, file_size, storage_path, url, format,
    created_at)
SELECT moved.id, v.platform_id, v.width, v.height, v.file_size, v.storage_path, v.url,
    v.format, %s
FROM moved CROSS JOIN UNNEST(%s::varchar[], %s::integer[], %s::integer[], %s::integer[],
    %s::varchar[], %s::varchar[], %s::varchar[])
    AS v(platform_id, width, height, file_size, storage_path, url, format)
ON CONFLICT (job_id, platform_id) DO UPDATE SET width = EXCLUDED.width,
    height = EXCLUDED.height, file_size = EXCLUDED.file_size,
    storage_path = EXCLUDED.storage_path, url = EXCLUDED.url, format = EXCLUDED.format
RETURNING id, platform_id
"""


def _record_batch(
    claim: Claim, rows: list[GeneratedImage], *, progress: int, publish: bool = True
) -> None:
    """Record platforms with the job's progress, fenced, in one statement: what
    ``job_set_progress`` and ``_upsert_images`` in one transaction do. ``publish=False``:
    the caller's move (the completion) sends the event."""
    job = claim.job
    now = timezone.now()
    progress = max(job.progress, min(100, progress))
    sql = _RECORD_SQL.format(
        job=connection.ops.quote_name(Job._meta.db_table),
        image=connection.ops.quote_name(GeneratedImage._meta.db_table),
    )
    params: list[Any] = [
        progress, now, now, job.pk, claim.token, str(JobStatus.ACTIVE), now,
        [r.platform_id for r in rows], [r.width for r in rows], [r.height for r in rows],
        [r.file_size for r in rows], [r.storage_path for r in rows], [r.url for r in rows],
        [r.format for r in rows],
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        recorded = dict((platform_id, pk) for pk, platform_id in cursor.fetchall())
    if not recorded:
        raise lost_claim_error(job.pk, claim.token)
    for row in rows:
        row.pk = recorded.get(row.platform_id)
        row.created_at = now
    job.progress, job.heartbeat_at, job.updated_at = progress, now, now
    if publish:
        publish_job_event(job)


def _images_in_hand(claim: Claim) -> None:
    """When this attempt recorded every platform of the job, hand its rows to the job as
    its prefetched ``images``: the final event lists them without reading them back."""
    job = claim.job
    latest = {row.platform_id: row for row in claim.recorded}
    if set(latest) != set(job.platforms):
        return  # some were recorded by an earlier attempt: the event reads them
    images = GeneratedImage.objects.filter(job=job)
    images._result_cache = list(latest.values())
    images._prefetch_done = True  # type: ignore[attr-defined]
    job._prefetched_objects_cache = {"images": images}  # type: ignore[attr-defined]


def _upsert_images(rows: list[GeneratedImage]) -> None:
    GeneratedImage.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["job", "platform_id"],
        update_fields=["width", "height", "file_size", "storage_path", "url", "format"],
    )
