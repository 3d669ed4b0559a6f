"""An app on another origin follows a job live, in Chromium (Debian's, driven by Playwright).

The API runs on one origin (a real uvicorn and Celery worker on http://127.0.0.1:<port>);
the app is a static page served from another (a tiny http.server on http://localhost:<port>),
as the old server's React client is (its VITE_API_URL). The page signs in with an API token
(fetch with Authorization), submits a job, asks for a stream ticket and follows the job with
`new EventSource(url + "?ticket=...")`, which cannot send a header.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from django.db import connections
from django.test import Client

from tests.conftest import api_key_for, make_user
from tests.factories import JobFactory
from tests.jobs.live.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

# The app: everything it does goes to window.outcome for the test to read.
APP = """<!doctype html><html><body><h1>Another origin</h1><ol id="log"></ol><script>
const api = API_BASE, token = API_TOKEN;
const outcome = {tickets: [], noTicket: null, first: [], second: [], afterFinal: []};
window.stage = "starting";
const note = (text) => {
  const item = document.createElement("li");
  item.textContent = text;
  document.getElementById("log").appendChild(item);
};
async function call(method, path, body) {
  const response = await fetch(api + path, {
    method,
    headers: {"Authorization": "Token " + token, "Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return {status: response.status, body: await response.json()};
}
async function ticketFor(jobId) {
  const answer = await call("POST", "/api/sse/tickets", {jobId});
  if (answer.status !== 201) throw new Error("ticket: " + JSON.stringify(answer));
  outcome.tickets.push(answer.body.ticket);
  return answer.body;
}
const record = (into, message) => {
  const event = JSON.parse(message.data);
  into.push({id: message.lastEventId, type: event.type, status: event.status,
             progress: event.progress, totalImages: event.result && event.result.totalImages});
  note(event.type + " " + event.status + " " + event.progress + "%");
  return event;
};
window.outcome = (async () => {
  // Signing in: the token is the app's credential on every call.
  const me = await call("GET", "/api/jobs?limit=1");
  outcome.signedIn = me.status;
  const submitted = await call("POST", "/api/jobs/generate",
    {prompt: "A paper boat on a pond", platforms: ["twitter-post", "instagram-post"]});
  const jobId = submitted.body.jobId;
  outcome.jobId = jobId;

  // What the old client did: no header, no ticket. Refused before any event.
  outcome.noTicket = await new Promise((resolve) => {
    const source = new EventSource(api + "/api/sse/jobs/" + jobId);
    let messages = 0;
    source.onmessage = () => { messages += 1; };
    source.onerror = () => { resolve({readyState: source.readyState, messages}); source.close(); };
  });

  // With a ticket: the job waits for a worker, which the test starts once we are connected.
  // The connection then "drops" after the first update.
  const first = await ticketFor(jobId);
  outcome.expiresIn = first.expiresIn;
  await new Promise((resolve, reject) => {
    const source = new EventSource(first.url);
    source.onmessage = (message) => {
      const event = record(outcome.first, message);
      if (event.type === "connected") window.stage = "connected";
      if (event.type === "update") { source.close(); resolve(); }
    };
    source.onerror = () => { source.close(); reject(new Error("first stream failed")); };
  });

  // Reconnecting: a new ticket, and the last id seen as lastEventId.
  const lastId = outcome.first[outcome.first.length - 1].id;
  const second = await ticketFor(jobId);
  await new Promise((resolve) => {
    const source = new EventSource(second.url + "&lastEventId=" + encodeURIComponent(lastId));
    let finished = false;
    source.onmessage = (message) => {
      const event = record(finished ? outcome.afterFinal : outcome.second, message);
      if (event.type === "final") finished = true;  // not closed: see what a reconnect gets
    };
    source.onerror = () => {
      outcome.afterFinal.push({error: true, readyState: source.readyState});
      if (source.readyState === EventSource.CLOSED) resolve();
    };
  });
  window.stage = "done";
  return outcome;
})();
</script></body></html>"""

# A page on another origin that uses the session cookie (CORS with credentials).
CREDENTIALS_APP = """<!doctype html><html><body><script>
window.outcome = (async () => {
  const api = API_BASE, jobId = JOB_ID;
  const result = {};
  try {
    const response = await fetch(api + "/api/jobs/" + jobId, {credentials: "include"});
    result.fetch = {status: response.status, jobId: (await response.json()).jobId};
  } catch (error) {
    result.fetch = {failed: String(error)};
  }
  result.stream = await new Promise((resolve) => {
    const source = new EventSource(api + "/api/sse/jobs/" + jobId, {withCredentials: true});
    source.onmessage = (message) => { source.close(); resolve(JSON.parse(message.data)); };
    source.onerror = () => { source.close(); resolve({error: true}); };
  });
  return result;
})();
</script></body></html>"""


class StaticSite:
    """A second origin: http://localhost:<port> serving ``pages`` (path -> HTML), which
    may be filled in after it starts (the API must know the origin first)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = pages.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://localhost:{self.server.server_address[1]}"


@contextmanager
def static_site() -> Iterator[StaticSite]:
    site = StaticSite()
    thread = threading.Thread(target=site.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.server.shutdown()
        site.server.server_close()


@pytest.fixture
def chromium(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test still uses the ORM.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            connections.close_all()


def app_page(html: str, **values: str) -> str:
    for name, value in values.items():
        html = html.replace(name, json.dumps(value))
    return html


def test_an_app_on_another_origin_follows_its_job_to_final_with_stream_tickets(
    chromium: Any, start_web: Any, start_worker: Any
) -> None:
    alice = make_user("alice")
    token = api_key_for(alice)
    with static_site() as site:
        base = start_web(env={"CORS_ALLOWED_ORIGINS": site.origin}, access_log=True)
        assert urlsplit(base).netloc != urlsplit(site.origin).netloc  # two origins
        site.pages["/"] = app_page(APP, API_BASE=base, API_TOKEN=token)
        page = chromium.new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{site.origin}/")
        page.wait_for_function("window.stage === 'connected'", timeout=30_000)
        start_worker(queues="images", concurrency=1)
        outcome = page.evaluate("window.outcome")
        page.wait_for_selector("li:has-text('final')", timeout=5000)
    assert not errors, errors

    assert outcome["signedIn"] == 200
    # Without a ticket the stream is refused (401, before any event) and not retried.
    assert outcome["noTicket"] == {"readyState": 2, "messages": 0}
    assert outcome["expiresIn"] == 30
    # First stream: connected (waiting), then the claim, then the "drop".
    assert [(e["type"], e["status"]) for e in outcome["first"]] == [
        ("connected", "waiting"),
        ("update", "active"),
    ]
    # The second stream resumed after the last id seen: no connected, no repeats, no gaps.
    second = outcome["second"]
    assert second[0]["type"] == "update" and second[-1]["type"] == "final"
    ids = [int(event["id"]) for event in [outcome["first"][-1], *second]]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    progress = [event["progress"] for event in second]
    assert progress == sorted(progress) and progress[-1] == 100
    assert (second[-1]["status"], second[-1]["totalImages"]) == ("completed", 2)
    # After final the server ended the stream; EventSource reconnected with its spent ticket
    # (and Last-Event-ID), was refused, and closed for good: no event came twice.
    assert outcome["afterFinal"][-1] == {"error": True, "readyState": 2}
    assert not [event for event in outcome["afterFinal"] if "type" in event]

    # Every ticket was spent; none is in the web process's log (its access log is on).
    assert len(outcome["tickets"]) == 2
    log = start_web.process(base).output()
    assert "ticket=[redacted]" in log
    for ticket in outcome["tickets"]:
        assert ticket not in log
        refused = httpx.get(f"{base}/api/sse/jobs/{outcome['jobId']}?ticket={ticket}", timeout=10)
        assert refused.status_code == 401


def test_cors_with_credentials_lets_a_listed_origin_use_the_session_only_when_enabled(
    chromium: Any, start_web: Any
) -> None:
    """CORS_ALLOW_CREDENTIALS=true: a page on a listed origin of the same site (the API on
    localhost:<port>, the app on localhost:<another port>) sends the API's session cookie
    with fetch(credentials: "include") and EventSource(withCredentials). Without it, the
    browser withholds both answers from the page."""
    alice = make_user("alice")
    job_id = str(JobFactory(owner=alice).id)
    session = Client()
    session.force_login(alice)
    session_id = session.cookies["sessionid"].value

    outcomes = {}
    with static_site() as site:
        allowed = {"CORS_ALLOWED_ORIGINS": site.origin}
        apis = {
            "with": start_web(env={**allowed, "CORS_ALLOW_CREDENTIALS": "true"}),
            "without": start_web(env=allowed),
        }
        context = chromium.new_context()
        for name, base in apis.items():
            api = base.replace("127.0.0.1", "localhost")  # the app's site: cookies go along
            site.pages[f"/{name}"] = app_page(CREDENTIALS_APP, API_BASE=api, JOB_ID=job_id)
            context.add_cookies([{"name": "sessionid", "value": session_id, "url": api}])
        for name in apis:
            page = context.new_page()
            page.goto(f"{site.origin}/{name}")
            outcomes[name] = page.evaluate("window.outcome")

    assert outcomes["with"]["fetch"] == {"status": 200, "jobId": job_id}
    assert outcomes["with"]["stream"]["type"] == "connected"
    assert outcomes["with"]["stream"]["jobId"] == job_id
    assert "failed" in outcomes["without"]["fetch"]  # a CORS error: no credentials allowed
    assert outcomes["without"]["stream"] == {"error": True}
