"""The live stream in a real browser: headless Chromium (Debian's) opens an EventSource
from a page, logged in with the session cookie, and sees the job through to `final`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.test import Client

from tests.conftest import api_key_for, make_user

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip

PAGE = """<!doctype html><html><body><h1>Job</h1><ol id="log"></ol><script>
const seen = [];
window.sseDone = new Promise((resolve) => {
  const source = new EventSource("/api/sse/jobs/JOB_ID");
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    seen.push({
      id: message.lastEventId, type: event.type, status: event.status, progress: event.progress
    });
    const item = document.createElement("li");
    item.textContent = event.type + " " + event.status + " " + event.progress + "%";
    document.getElementById("log").appendChild(item);
    if (event.type === "final") { source.close(); resolve({seen, final: event}); }
  };
});
</script></body></html>"""


def test_a_page_in_chromium_follows_a_job_to_final_over_event_source(
    start_web: Any, start_worker: Any
) -> None:
    from playwright.sync_api import sync_playwright

    alice = make_user("alice")
    base = start_web()
    start_worker(queues="images", concurrency=1)
    token = api_key_for(alice)
    response = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "A kite over the dunes", "platforms": ["twitter-post", "instagram-story"]},
        headers={"Authorization": f"Token {token}"}, timeout=10,
    )  # fmt: skip
    job_id = response.json()["jobId"]
    session = Client()
    session.force_login(alice)  # the web page's login: a session cookie, no token in JS
    session_id = session.cookies["sessionid"].value

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": "sessionid", "value": session_id, "url": base}])
            page = context.new_page()
            # The test page, served as if by the web process (same origin as the stream).
            page.route(f"{base}/sse-test-page", lambda route: route.fulfill(
                status=200, content_type="text/html", body=PAGE.replace("JOB_ID", job_id),
            ))  # fmt: skip
            page.goto(f"{base}/sse-test-page")
            outcome = page.evaluate("window.sseDone")
            page.wait_for_selector("li:has-text('final')", timeout=5000)
        finally:
            browser.close()

    types = [event["type"] for event in outcome["seen"]]
    assert types[0] == "connected" and types[-1] == "final"
    assert outcome["final"]["status"] == "completed"
    assert outcome["final"]["result"]["totalImages"] == 2
    ids = [int(event["id"]) for event in outcome["seen"] if event["type"] != "connected"]
    assert ids == sorted(ids)
    progress = [event["progress"] for event in outcome["seen"]]
    assert progress == sorted(progress)
