"""Fixtures of the Supabase sync tests: the sync on, pointed at the loopback Supabase fake
(PostgREST tables and Storage), with short retry delays; jobs submitted and run through the
services, their commit hooks run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobs.models import Job
from jobs.supabase_sync import services, tables
from jobs.supabase_sync.models import SyncEvent, SyncState
from tests.fakes.fixtures import BUCKET
from tests.fakes.supabase_server import SERVICE_KEY, FakeSupabase

RETRY_SCHEDULE = [1.0, 1.0, 1.0]


@pytest.fixture
def sync_on(settings: Any, fake_supabase: FakeSupabase) -> Iterator[FakeSupabase]:
    """SUPABASE_SYNC_TABLES=true against the fake (its Storage keeps the files too)."""
    settings.SUPABASE_URL = fake_supabase.url
    settings.SUPABASE_SERVICE_KEY = SERVICE_KEY
    settings.SUPABASE_BUCKET = BUCKET
    settings.SUPABASE_SYNC_TABLES = True
    settings.SUPABASE_SYNC_TIMEOUT_SECONDS = 2
    settings.SUPABASE_SYNC_RETRY_SCHEDULE = RETRY_SCHEDULE
    tables.reset_client()
    yield fake_supabase
    tables.reset_client()


@pytest.fixture
def committing(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Run ``action()`` as its own transaction would, its commit hooks run."""

    def run(action: Callable[[], Any]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return action()

    return run


def push_all(job: Job) -> list[str | None]:
    """Push every pending event of ``job`` now, oldest first, as the worker does when their
    messages arrive (a due retry included). Returns what each push did."""
    from django.utils import timezone

    done = []
    for event in SyncEvent.objects.filter(job=job, state=SyncState.PENDING).order_by("pk"):
        SyncEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
        done.append(services.event_push(event_id=event.pk))
    return done
