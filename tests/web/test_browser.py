"""The web page in headless Chromium against a real uvicorn and a real Celery worker.

Debian's chromium is driven by Playwright through its executable path (no downloaded
browser). Screenshots of each stage go to tests/artifacts/ (not committed) to be looked at.
Every test fails on any console error or uncaught exception in the page.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connections
from PIL import Image

from jobs.models import Job, JobKind, JobStatus
from jobs.platforms import PLATFORMS
from tests.conftest import ROOT, make_user

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = ROOT / "tests" / "artifacts"
PASSWORD = "a-long-test-password-1"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
JOB_TIMEOUT_MS = 120_000

if not Path(CHROMIUM).exists():  # pragma: no cover - .ci/run installs it
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test still uses the
    # ORM between browser calls, which Django would otherwise refuse as "async context".
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
        # Connections the test opened here live in Playwright's context; close them before
        # the test database is dropped.
        connections.close_all()


class Session:
    """A browser context (one user) with its page, its console log and its screenshots."""

    def __init__(self, browser: Any, base: str, name: str, viewport: dict[str, int]) -> None:
        self.base = base
        self.name = name
        self.context = browser.new_context(viewport=viewport, base_url=base, accept_downloads=True)
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        self.console: list[Any] = []
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.console.append(message))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(self, stage: str, *, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{self.name}-{stage}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def sign_in(self, username: str) -> None:
        page = self.page
        page.goto("/")
        page.wait_for_url("**/accounts/login/**")
        self.shot("01-sign-in")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{self.base}/")
        page.get_by_role("heading", name="New images").wait_for()

    def assert_no_console_errors(self) -> None:
        bad = [f"{m.type}: {m.text} @ {m.location}" for m in self.console if m.type == "error"]
        assert not bad and not self.errors, (bad, self.errors)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_session(browser: Any) -> Iterator[Callable[..., Session]]:
    sessions: list[Session] = []

    def open_(base: str, name: str, viewport: dict[str, int] = DESKTOP) -> Session:
        session = Session(browser, base, name, viewport)
        sessions.append(session)
        return session

    yield open_
    for session in sessions:
        session.close()


def user_with_password(username: str, *, staff: bool = False) -> Any:
    user = make_user(username, staff=staff)
    user.set_password(PASSWORD)
    user.save()
    return user


def record_progress(page: Any) -> None:
    """Keep every progress value the page shows, so the test sees the steps, not only the end."""
    page.evaluate(
        """() => {
            window.__progress = [];
            new MutationObserver(() => {
                const panel = document.getElementById('job-panel');
                window.__progress.push([panel.dataset.status, Number(panel.dataset.progress)]);
            }).observe(document.getElementById('job-panel'),
                       {attributes: true, attributeFilter: ['data-progress', 'data-status']});
        }"""
    )


def wait_for_job_status(page: Any, status: str) -> None:
    page.wait_for_selector(f"#job-panel[data-status='{status}']", timeout=JOB_TIMEOUT_MS)


def wait_for_gallery_images(page: Any, count: int) -> None:
    page.wait_for_function(
        """(count) => {
            const images = [...document.querySelectorAll('#gallery-grid img')];
            return images.length === count && images.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=count,
        timeout=30_000,
    )
    page.evaluate(
        "() => Promise.all([...document.querySelectorAll('#gallery-grid img')]"
        ".map(i => i.decode()))"
    )


def test_a_user_signs_in_submits_watches_progress_and_downloads_images_on_a_phone(
    start_web: Any, start_worker: Any, open_session: Callable[..., Session], tmp_path: Path
) -> None:
    user_with_password("alice")
    start_worker()
    base = start_web()
    session = open_session(base, "phone", PHONE)
    page = session.page

    session.sign_in("alice")
    # Every form control has a label, and the page fits the phone's width.
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(e => !e.labels || e.labels.length === 0).map(e => e.name || e.id)"
    )
    assert unlabelled == []
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    for platform in PLATFORMS.values():
        checkbox = page.get_by_role("checkbox", name=platform.name)
        assert checkbox.is_checked()
        assert page.get_by_text(f"{platform.width} × {platform.height}").is_visible()
    session.shot("02-form")

    # Keyboard only: type the prompt, pick "Natural", then tab to the submit button.
    page.get_by_label("Prompt").focus()
    page.keyboard.type("A lighthouse on a cliff at dusk")
    page.get_by_role("radio", name="Natural").focus()
    page.keyboard.press("Space")
    assert page.get_by_role("radio", name="Natural").is_checked()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "generate-button":
            break
    assert page.evaluate("() => document.activeElement.id") == "generate-button"
    record_progress(page)
    page.keyboard.press("Enter")

    page.wait_for_selector("#job-panel:not([hidden])")
    assert page.locator("#job-status").get_attribute("aria-live") == "polite"
    page.wait_for_function(
        "() => Number(document.getElementById('job-panel').dataset.progress) > 0",
        timeout=JOB_TIMEOUT_MS,
    )
    page.locator("#job-panel").scroll_into_view_if_needed()
    session.shot("03-progress", full_page=False)
    wait_for_job_status(page, "completed")
    transport = page.locator("#job-panel").get_attribute("data-transport")
    assert transport == "sse", "the page followed the job without the live event stream"

    steps = page.evaluate("() => window.__progress")
    values = [progress for _, progress in steps]
    assert values[-1] == 100
    assert values == sorted(values), f"progress went down: {steps}"
    assert any(0 < value < 100 for value in values), f"no step between 0 and 100: {steps}"
    assert page.locator("#job-progress").evaluate("e => e.value") == 100
    assert "100%" in page.locator("#job-status").inner_text()

    wait_for_gallery_images(page, 6)
    tiles = page.locator("#gallery-grid li")
    assert tiles.count() == 6
    for platform in PLATFORMS.values():
        tile = page.locator(f"#gallery-grid li[data-platform='{platform.id}']")
        assert f"{platform.width} × {platform.height} px" in tile.inner_text()
        assert int(tile.locator("[data-bytes]").get_attribute("data-bytes")) > 0
        shown = tile.locator("img").evaluate(
            "i => i.getBoundingClientRect().width / i.getBoundingClientRect().height"
        )
        assert shown == pytest.approx(platform.width / platform.height, rel=0.03)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    page.locator("#gallery").scroll_into_view_if_needed()
    session.shot("04-gallery")

    # One image, through its download link.
    with page.expect_download() as download_info:
        page.locator("#gallery-grid a[data-platform='instagram-story']").click()
    download = download_info.value
    # The link suggests instagram-story-1080x1920.png; a Content-Disposition from the file
    # server (Django's static serve sends one) takes precedence.
    assert download.suggested_filename.startswith("instagram-story")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with Image.open(saved) as picture:
        assert picture.size == (1080, 1920)
        assert picture.format == "PNG"

    # All of them, as one zip.
    with page.expect_download() as zip_info:
        page.get_by_role("link", name="Download all (.zip)").click()
    archive_path = tmp_path / "all.zip"
    zip_info.value.save_as(archive_path)
    with zipfile.ZipFile(archive_path) as archive:
        names = archive.namelist()
        assert len(names) == 6
        for name in names:
            with Image.open(io.BytesIO(archive.read(name))) as picture:
                platform_id = name.rsplit("-", 1)[0]
                assert picture.size == (PLATFORMS[platform_id].width, PLATFORMS[platform_id].height)

    # The history lists it, newest first, completed.
    first = page.locator("#history-list li").first
    first.wait_for()
    assert first.get_attribute("data-status") == "completed"
    assert "A lighthouse on a cliff at dusk" in first.inner_text()
    session.assert_no_console_errors()
    print(f"progress steps seen over {transport}: {steps}")


def test_a_failed_job_shows_its_reason_and_a_retry_runs_it_to_completion(
    start_web: Any, start_worker: Any, open_session: Callable[..., Session]
) -> None:
    alice = user_with_password("alice")
    failed = Job.objects.create(
        owner=alice, kind=JobKind.IMAGE_GENERATION, status=JobStatus.FAILED, progress=30,
        attempts_made=3,
        prompt="A storm over the harbour", platforms=["instagram-post", "youtube-thumbnail"],
        failed_reason="The image model timed out 3 times (HTTP 504 from the provider)",
    )  # fmt: skip
    base = start_web()  # no worker yet: a submitted job stays waiting, so it can be cancelled
    session = open_session(base, "desktop", DESKTOP)
    page = session.page
    session.sign_in("alice")

    item = page.locator(f"#history-list li[data-job-id='{failed.id}']")
    item.wait_for()
    assert item.get_attribute("data-status") == "failed"
    assert "HTTP 504 from the provider" in item.inner_text()
    retry = item.get_by_role("button", name="Retry: A storm over the harbour")
    assert retry.is_visible()
    session.shot("01-history-failed")

    # Cancel: a job waiting in the queue is cancelled from the page.
    page.get_by_label("Prompt").fill("A job to cancel")
    page.get_by_role("checkbox", name="Instagram Story").uncheck()
    page.get_by_role("button", name="Generate images").click()
    wait_for_job_status(page, "waiting")
    assert "Waiting in the queue" in page.locator("#job-status").inner_text()
    session.shot("02-waiting")
    page.get_by_role("button", name="Cancel job").click()
    wait_for_job_status(page, "cancelled")
    assert page.get_by_role("button", name="Cancel job").is_hidden()
    cancelled = Job.objects.exclude(pk=failed.pk).get()
    assert cancelled.status == JobStatus.CANCELLED and cancelled.platforms == [
        p for p in PLATFORMS if p != "instagram-story"
    ]
    session.shot("03-cancelled")

    # Retry the failed one: now with a worker, it runs to completion.
    start_worker()
    retry.click()
    page.wait_for_selector(
        "#job-panel[data-status]:not([data-status='failed']):not([data-status='cancelled'])"
    )
    wait_for_job_status(page, "completed")
    wait_for_gallery_images(page, 2)
    tiles = page.locator("#gallery-grid li").all()
    assert [tile.get_attribute("data-platform") for tile in tiles] == [
        "instagram-post", "youtube-thumbnail",
    ]  # fmt: skip
    page.wait_for_selector(f"#history-list li[data-job-id='{failed.id}'][data-status='completed']")
    assert (
        "HTTP 504" not in page.locator(f"#history-list li[data-job-id='{failed.id}']").inner_text()
    )
    session.shot("04-retried")
    failed.refresh_from_db()
    assert failed.status == JobStatus.COMPLETED and failed.images.count() == 2
    session.assert_no_console_errors()


def test_the_staff_queue_panel_follows_jobs_as_they_run(
    start_web: Any, start_worker: Any, open_session: Callable[..., Session]
) -> None:
    from tests.conftest import api_key_for

    user_with_password("root", staff=True)
    bob = make_user("bob")
    token = api_key_for(bob)
    base = start_web()
    session = open_session(base, "staff", DESKTOP)
    page = session.page
    session.sign_in("root")

    panel = page.locator("#queue-panel")
    waiting = panel.locator("[data-stat='waiting']")
    completed = panel.locator("[data-stat='completed']")
    page.wait_for_function(
        "() => document.querySelector('[data-stat=waiting]').textContent === '0'"
    )
    assert completed.inner_text() == "0"
    session.shot("01-queue-empty")

    # Another user's jobs, through the API: the panel counts them as they wait...
    for n in range(2):
        response = httpx.post(
            f"{base}/api/jobs/generate",
            json={"prompt": f"Queue item {n}", "platforms": ["twitter-post"]},
            headers={"Authorization": f"Token {token}"}, timeout=10,
        )  # fmt: skip
        assert response.status_code == 202
    page.wait_for_function(
        "() => document.querySelector('[data-stat=waiting]').textContent === '2'", timeout=30_000
    )
    # The staff history (every user's jobs) follows the queue too.
    page.wait_for_function(
        "() => document.querySelectorAll('#history-list li').length === 2", timeout=30_000
    )
    session.shot("02-queue-waiting")

    # ...and as a worker completes them.
    start_worker()
    page.wait_for_function(
        "() => document.querySelector('[data-stat=completed]').textContent === '2'",
        timeout=JOB_TIMEOUT_MS,
    )
    assert waiting.inner_text() == "0"
    assert panel.locator("[data-stat='active']").inner_text() == "0"
    assert panel.get_attribute("data-transport") == "sse"
    page.wait_for_function(
        "() => [...document.querySelectorAll('#history-list li')]"
        ".every(li => li.dataset.status === 'completed')"
    )
    session.shot("03-queue-completed")
    session.assert_no_console_errors()


def test_the_page_falls_back_to_polling_when_the_live_stream_fails(
    start_web: Any, start_worker: Any, open_session: Callable[..., Session]
) -> None:
    user_with_password("alice")
    start_worker()
    base = start_web()
    session = open_session(base, "fallback", DESKTOP)
    page = session.page
    # A proxy that refuses the event stream: the page must still follow the job.
    page.route("**/api/sse/**", lambda route: route.fulfill(status=503, body="no streams here"))
    session.sign_in("alice")

    page.get_by_label("Prompt").fill("Followed without a stream")
    for platform in PLATFORMS.values():
        if platform.id != "facebook-post":
            page.get_by_role("checkbox", name=platform.name).uncheck()
    page.get_by_role("button", name="Generate images").click()
    wait_for_job_status(page, "completed")
    assert page.locator("#job-panel").get_attribute("data-transport") == "polling"
    wait_for_gallery_images(page, 1)
    session.shot("01-completed-by-polling")
    # The refused stream is the only thing the console may complain about.
    others = [
        m
        for m in session.console
        if m.type == "error"
        and "/api/sse/" not in (m.location or {}).get("url", "")
        and "503" not in m.text
    ]
    assert not others and not session.errors, ([m.text for m in others], session.errors)


def test_a_job_waiting_for_a_provider_slot_says_until_when_and_the_form_offers_reuse(
    start_web: Any,
    start_worker: Any,
    open_session: Callable[..., Session],
    fake_openai: Any,
    settings: Any,
) -> None:
    from jobs.spend.limiter import ProviderLimiter
    from snapasset.core.redis_clients import redis_client
    from tests.fakes.fixtures import openai_env

    user_with_password("alice")
    env = {**openai_env(fake_openai), "OPENAI_IMAGES_PER_MINUTE": "1"}
    # The account's one call of this minute is already taken (by another worker, say).
    limiter = ProviderLimiter(name="openai", per_minute=1, client=redis_client(timeout=5))
    limiter.reset()
    assert limiter.acquire(waiter="elsewhere").__class__.__name__ == "Grant"
    try:
        start_worker(env=env)
        base = start_web(env=env)
        session = open_session(base, "desktop", DESKTOP)
        page = session.page
        session.sign_in("alice")

        page.get_by_label("Prompt").fill("A lighthouse, if I have one already")
        reuse = page.get_by_role("checkbox", name="Reuse my identical earlier picture")
        assert not reuse.is_checked()
        reuse.check()
        page.get_by_role("button", name="Generate images").click()
        wait_for_job_status(page, "delayed")
        line = page.locator("#job-status").inner_text()
        job = Job.objects.get()
        assert job.reuse and job.delay_reason == "provider-slot" and job.attempts_made == 0
        local = page.evaluate(
            "(iso) => new Date(iso).toTimeString().slice(0, 8)", job.retry_at.isoformat()
        )
        assert line == f"Waiting for a provider slot until {local}…", line
        session.shot("01-waiting-for-a-provider-slot")
        page.get_by_role("button", name="Cancel job").click()
        wait_for_job_status(page, "cancelled")
        assert fake_openai.generation_calls == []
        session.assert_no_console_errors()
    finally:
        limiter.reset()
