"""Fixtures of the fault and load tests: a broker of the test's own and a stack on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_user
from tests.jobs.faults import RedisServer, Stack, celery_app_on


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with celery_app_on(server.url):
            yield server
    finally:
        server.stop()


@pytest.fixture
def stack(
    broker: RedisServer, tmp_path: Path, start_worker: Any, start_web: Any
) -> Iterator[Stack]:
    from tests.conftest import api_key_for

    stack = Stack(broker, tmp_path, start_worker, start_web)
    stack.token = api_key_for(make_user("alice"))
    try:
        yield stack
    finally:
        stack.close()
