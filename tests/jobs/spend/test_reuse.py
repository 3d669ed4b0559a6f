"""Finding an original the user already paid for: same prompt, style, model and size,
within the window, still stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs.spend.ledger import CallSpec, ledger_record_call
from jobs.spend.reuse import reuse_find_original, reuse_requested
from tests.factories import JobFactory

MODEL = "gpt-image-2.6-sunburst"
PROMPT = "A red fox in the snow"


def generation(owner: Any, *, outcome: str = "succeeded", hours_ago: float = 1, **job: Any) -> Any:
    """A completed job whose original is stored, with its call in the ledger."""
    job = JobFactory(owner=owner, status=job.pop("status", "completed"), prompt=PROMPT, **job)
    path = default_storage.save(f"tmp/{owner.username}/{job.generation_id}/original.png",
                                ContentFile(b"png"))  # fmt: skip
    job.source_path = path
    job.save()
    at = timezone.now() - timedelta(hours=hours_ago)
    spec = CallSpec(provider="openai", model=MODEL, quality="medium")
    ledger_record_call(job=job, call_number=1, outcome=outcome, spec=spec, at=at)
    return job


def find(owner: Any, **criteria: Any) -> Any:
    values = {"prompt": PROMPT, "image_type": "vivid", "model": MODEL, "size": "1024x1024"}
    return reuse_find_original(owner=owner, **{**values, **criteria})


def test_the_newest_matching_original_is_found(alice: Any) -> None:
    generation(alice, hours_ago=5)
    newest = generation(alice, hours_ago=1)
    found = find(alice)
    assert found is not None
    assert found.job_id == str(newest.id) and found.source_path == newest.source_path
    assert (found.model, found.size, found.quality) == (MODEL, "1024x1024", "medium")


@pytest.mark.parametrize(
    "criteria",
    [
        {"prompt": "A grey wolf"},
        {"image_type": "natural"},
        {"model": "gpt-image-1"},
        {"size": "1536x1024"},
    ],
)
def test_another_prompt_style_model_or_size_is_not_the_same_picture(
    alice: Any, criteria: dict[str, str]
) -> None:
    generation(alice)
    assert find(alice, **criteria) is None


def test_only_the_same_users_paid_completed_originals_in_the_window_count(
    alice: Any, bob: Any, settings: Any
) -> None:
    settings.REUSE_WINDOW_HOURS = 24
    generation(bob)  # someone else's
    generation(alice, hours_ago=25)  # too old
    generation(alice, outcome="reused")  # itself a reuse
    generation(alice, outcome="failed")  # no picture
    generation(alice, status="failed")  # the job did not complete
    assert find(alice) is None


def test_an_original_removed_from_storage_is_not_reused(alice: Any) -> None:
    job = generation(alice)
    default_storage.delete(job.source_path)
    assert find(alice) is None
    assert find(alice, exclude_job_id=None) is None


def test_a_job_is_not_its_own_source(alice: Any) -> None:
    job = generation(alice)
    assert find(alice, exclude_job_id=job.id) is None


def test_reuse_is_opt_in_and_off_with_a_zero_window(settings: Any, alice: Any) -> None:
    settings.GENERATION_REUSE_DEFAULT = False
    assert reuse_requested(None) is False and reuse_requested(True) is True
    settings.GENERATION_REUSE_DEFAULT = True
    assert reuse_requested(None) is True and reuse_requested(False) is False
    settings.REUSE_WINDOW_HOURS = 0
    assert reuse_requested(True) is False
    generation(alice)
    assert find(alice) is None
