"""The fault campaign in the suite: a short fixed seed here, a long one with `make chaos`.

`CHAOS_SEED=N CHAOS_SECONDS=S make chaos` replays a run (the seed is printed first thing);
see tests/chaos/campaign.py for what it does and tests/chaos/invariants.py for what it checks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.chaos.campaign import Campaign, CampaignConfig
from tests.chaos.invariants import check_all, describe, figures
from tests.chaos.stack import ChaosStack
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.supabase_server import FakeSupabase

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CI_SEED = 13
CI_SECONDS = 75


def test_every_job_settles_exactly_once_under_a_seeded_fault_campaign(
    transactional_db: None, tmp_path: Path, fake_openai: FakeOpenAI, fake_supabase: FakeSupabase
) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # thousands of requests
    config = CampaignConfig.from_env(default_seconds=CI_SECONDS, default_seed=CI_SEED)
    stack = ChaosStack(tmp_path, openai=fake_openai, supabase=fake_supabase)
    campaign = Campaign(stack, config)
    try:
        result = campaign.run()
        violations = check_all(campaign, result)
        report = figures(campaign, result)
        print(report, flush=True)
    finally:
        campaign.close()
        stack.close()
    (tmp_path / "chaos-report.txt").write_text(report + "\n" + describe(violations) + "\n")
    if violations:
        pytest.fail(
            f"seed {config.seed} (replay: CHAOS_SEED={config.seed} "
            f"CHAOS_SECONDS={config.seconds:.0f} make chaos)\n{describe(violations)}\n{report}",
            pytrace=False,
        )
