"""``live_stack``: a ChaosStack factory for tests (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.stack import ChaosStack
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def live_stack(
    transactional_db: None, tmp_path: Path, fake_openai: FakeOpenAI
) -> Iterator[Callable[..., ChaosStack]]:
    """``live_stack(supabase=None, **env)``: web, workers and beat are started by the test
    (``stack.start_web()``...); everything is stopped afterwards."""
    stacks: list[ChaosStack] = []

    def make(*, supabase: Any = None, **env: str) -> ChaosStack:
        stack = ChaosStack(tmp_path / f"stack{len(stacks)}", openai=fake_openai,
                           supabase=supabase, env=env)  # fmt: skip
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
