"""Fixtures that run the fakes and point settings (or a child process's env) at them.

Registered for every test by ``pytest_plugins`` in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.openai_server import API_KEY, FakeOpenAI
from tests.fakes.supabase_server import SERVICE_KEY, FakeSupabase

BUCKET = "generated-images"


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def fake_supabase() -> Iterator[FakeSupabase]:
    server = FakeSupabase(buckets={BUCKET: True}).start()
    yield server
    server.stop()


def openai_env(fake: FakeOpenAI) -> dict[str, str]:
    return {"IMAGE_PROVIDER": "openai", "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake.api_base}


def supabase_env(fake: FakeSupabase) -> dict[str, str]:
    return {
        "SUPABASE_URL": fake.url,
        "SUPABASE_SERVICE_KEY": SERVICE_KEY,
        "SUPABASE_BUCKET": BUCKET,
    }


@pytest.fixture
def use_fake_openai(settings: Any, fake_openai: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """This process's provider is OpenAI, pointed at the fake. The shared rate limiter of
    the account starts and ends empty: a 429 of one test must not hold the next one's call
    (the limiter keeps it in the run's Redis for its retry-after)."""
    from jobs.spend.limiter import provider_limiter

    settings.IMAGE_PROVIDER = "openai"
    settings.OPENAI_API_KEY = API_KEY
    settings.OPENAI_BASE_URL = fake_openai.api_base
    settings.OPENAI_TIMEOUT_SECONDS = 5
    provider_limiter().reset()
    yield fake_openai
    provider_limiter().reset()


@pytest.fixture
def use_fake_supabase(settings: Any, fake_supabase: FakeSupabase) -> FakeSupabase:
    """This process's default storage is Supabase, pointed at the fake."""
    settings.SUPABASE_URL = fake_supabase.url
    settings.SUPABASE_SERVICE_KEY = SERVICE_KEY
    settings.SUPABASE_BUCKET = BUCKET
    settings.SUPABASE_TIMEOUT_SECONDS = 5
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "jobs.storage.SupabaseStorage"},
    }
    return fake_supabase
