"""What must hold after a fault campaign, checked from outside: HTTP and the fakes' logs.

Each check returns ``Violation``s naming the invariant and the job, so a failure says what
broke where. The invariants (README, "How a job runs, and what is guaranteed"):

- settled: no job is left waiting, active or delayed;
- images: a completed job has exactly one image per requested platform, each downloadable
  at its platform's size, and exactly those files in storage; a cancelled job has none;
- paid calls: the image model answered with an image at most once per job, plus one for
  each call a SIGKILL cut short (in flight, or answered but its original not yet stored)
  and one for each retry after a cancel that came once the job had paid (a cancel removes
  what the job made, its generated original included), and never for a refused prompt;
- no 5xx: the web process never answered a 5xx (nor left a request unanswered);
- live stream: a fresh stream of a settled job ends with a ``final`` event of the job's
  status, and so does one opened with a Last-Event-ID before the final's id, or above the
  current id (a client's id from before the broker lost its data); a stream watched while
  the job ran (and reopened with Last-Event-ID when it broke) saw ``final``;
- no internal errors: no job failed with "Internal error" (a bug, not a fault).
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from tests.chaos.campaign import PENDING, Campaign, CampaignResult, JobRecord
from tests.chaos.sse import read_stream
from tests.chaos.stack import generation_calls


@dataclass(frozen=True)
class Violation:
    invariant: str
    job: str  # "cj-N <uuid>", or "-" for the whole run
    detail: str


def check_all(campaign: Campaign, result: CampaignResult) -> list[Violation]:
    violations = check_settled(campaign, result)
    platforms = platform_sizes(campaign)
    for job in campaign.jobs:
        state = job_state(campaign, job)
        if state is None:
            violations.append(Violation("job readable", job.label, "GET /api/jobs/{id} failed"))
            continue
        violations += check_images(campaign, job, state, platforms)
        violations += check_paid_calls(campaign, job, state)
        violations += check_live_stream(campaign, job, state)
        if state["status"] == "failed" and "Internal error" in (state["failedReason"] or ""):
            violations.append(Violation("no internal errors", job.label, state["failedReason"]))
    # Last: the checks above went through HTTP too.
    violations += check_no_server_errors(campaign)
    return violations


def job_state(campaign: Campaign, job: JobRecord) -> dict[str, Any] | None:
    response = campaign.http("GET", f"/api/jobs/{job.job_id}", campaign.tokens[job.user])
    if response is None or response.status_code != 200:
        return None
    return dict(response.json())


def platform_sizes(campaign: Campaign) -> dict[str, tuple[int, int]]:
    response = campaign.http("GET", "/api/platforms", campaign.staff_token)
    assert response is not None and response.status_code == 200
    return {p["id"]: (p["width"], p["height"]) for p in response.json()["platforms"]}


# --- The invariants -----------------------------------------------------------------------


def check_settled(campaign: Campaign, result: CampaignResult) -> list[Violation]:
    labels = {job.job_id: job for job in campaign.jobs}
    violations = []
    for row in result.pending_left:
        job = labels.get(row.get("jobId", ""))
        history = (
            f"; cancels {[code for _, code in job.cancels]}, retries "
            f"{[code for _, code in job.retries]}"
            if job
            else ""
        )
        violations.append(
            Violation(
                "settled",
                job.label if job else str(row.get("jobId", "-")),
                f"still {row.get('status')} after {result.time_to_settle:.0f}s of calm "
                f"(progress {row.get('progress')}){history}",
            )
        )
    for job in campaign.jobs:
        if job.last_known_status in PENDING and not any(
            row.get("jobId") == job.job_id for row in result.pending_left
        ):
            violations.append(Violation("settled", job.label, f"still {job.last_known_status}"))
    return violations


def check_images(
    campaign: Campaign, job: JobRecord, state: dict[str, Any], sizes: dict[str, tuple[int, int]]
) -> list[Violation]:
    violations: list[Violation] = []
    stored = stored_outputs(campaign, job)
    if state["status"] == "cancelled" and stored:
        violations.append(
            Violation("cancelled jobs leave no files", job.label, f"still stored: {stored}")
        )
    if state["status"] != "completed":
        return violations
    if sorted(stored) != sorted(job.platforms):
        violations.append(
            Violation(
                "one stored file per platform",
                job.label,
                f"platforms {sorted(job.platforms)}, files in storage {sorted(stored)}",
            )
        )
    response = campaign.http("GET", f"/api/jobs/{job.job_id}/result", campaign.tokens[job.user])
    if response is None or response.status_code != 200:
        code = response.status_code if response is not None else "no answer"
        return violations + [Violation("images", job.label, f"result answered {code}")]
    images = response.json()["result"]["images"]
    ids = [image["platformId"] for image in images]
    if sorted(ids) != sorted(job.platforms):
        violations.append(
            Violation("images", job.label, f"platforms {sorted(job.platforms)}, images {ids}")
        )
    for image in images:
        problem = download_problem(image, sizes)
        if problem:
            violations.append(Violation("images downloadable", job.label, problem))
    return violations


def stored_outputs(campaign: Campaign, job: JobRecord) -> list[str]:
    """The platform ids whose output file is in storage for this job (the Supabase fake)."""
    supabase = campaign.stack.supabase
    if supabase is None:
        return []
    prefix = f"{job.user}/{job.generation_id}/"
    return [
        name[len(prefix) :].rsplit(".", 1)[0]
        for name in supabase.names()
        if name.startswith(prefix)
    ]


def download_problem(image: dict[str, Any], sizes: dict[str, tuple[int, int]]) -> str:
    try:
        response = httpx.get(image["url"], timeout=30)
    except httpx.HTTPError as exc:
        return f"{image['platformId']}: {exc.__class__.__name__}"
    if response.status_code != 200:
        return f"{image['platformId']}: download answered {response.status_code}"
    if len(response.content) != image["fileSize"]:
        return (
            f"{image['platformId']}: {len(response.content)} bytes, record says {image['fileSize']}"
        )
    try:
        with Image.open(io.BytesIO(response.content)) as picture:
            size = picture.size
    except Exception as exc:
        return f"{image['platformId']}: not an image ({exc})"
    if size != sizes[image["platformId"]]:
        return f"{image['platformId']}: {size}, expected {sizes[image['platformId']]}"
    return ""


def cut_short_calls(campaign: Campaign, job: JobRecord) -> list[str]:
    """The job's generation calls a SIGKILL cut short: in flight when their process was
    killed, or answered with an image that the process had not yet stored as the job's
    original (the one window README leaves: "a worker killed during the image model call")."""
    supabase = campaign.stack.supabase
    originals = [
        request
        for request in (supabase.seen("POST", "/storage/v1/object/") if supabase else [])
        if f"/{job.generation_id}/original." in request.path and request.status == 200
    ]
    cut = []
    for call in generation_calls(campaign.stack.openai, job.marker):
        for kill in campaign.kills:
            if call.tag != kill.tag or call.started > kill.at:
                continue
            in_flight = call.finished is None or call.finished >= kill.at
            unsaved = call.status == 200 and not any(
                o.tag == kill.tag and call.finished <= (o.finished or 0) <= kill.at
                for o in originals
            )
            if in_flight or unsaved:
                cut.append(f"{call.tag}@{call.started:.1f} ({kill.reason})")
    return cut


@dataclass(frozen=True)
class PaidCalls:
    calls: list[Any]  # every generation request of the job, in order
    paid: int  # answered with an image
    cut: list[str]  # calls a SIGKILL cut short
    after_cancel: int  # successful retries after a cancel that came once the job had paid

    @property
    def allowed(self) -> int:
        return 1 + len(self.cut) + self.after_cancel


def paid_calls(campaign: Campaign, job: JobRecord) -> PaidCalls:
    calls = sorted(generation_calls(campaign.stack.openai, job.marker), key=lambda c: c.started)
    paid = [call for call in calls if call.status == 200]
    paid_before = lambda at: any(call.finished and call.finished < at for call in paid)  # noqa: E731
    after_cancel = sum(
        1
        for retry_at, status in job.retries
        if status == 200
        and any(code == 200 and at < retry_at and paid_before(at) for at, code in job.cancels)
    )
    return PaidCalls(calls, len(paid), cut_short_calls(campaign, job), after_cancel)


def check_paid_calls(campaign: Campaign, job: JobRecord, state: dict[str, Any]) -> list[Violation]:
    account = paid_calls(campaign, job)
    if job.policy:
        if account.paid:
            return [
                Violation("paid calls", job.label, f"a refused prompt was paid {account.paid}x")
            ]
        return []
    if state["status"] == "completed" and not account.paid:
        return [Violation("paid calls", job.label, "completed without a paid call")]
    if account.paid <= account.allowed:
        return []
    calls_text = ", ".join(
        f"{c.tag}@{c.started:.1f}->{c.status} ({campaign.planned.get((job.n, i), 'calm')})"
        for i, c in enumerate(account.calls)
    )
    terms = [
        f"{t.tag}@{t.at:.1f}"
        for t in campaign.terms
        if any(c.tag == t.tag and c.started <= t.at for c in account.calls)
    ]
    return [
        Violation(
            "paid calls",
            job.label,
            f"paid {account.paid} times, {account.allowed} allowed (cut short by SIGKILL: "
            f"{account.cut or 'none'}; retries after a cancel: {account.after_cancel}); "
            f"status {state['status']}, attempts {state['attemptsMade']}; calls: {calls_text}; "
            f"SIGTERMs of a process that called for it: {terms or 'none'}",
        )
    ]


def check_live_stream(campaign: Campaign, job: JobRecord, state: dict[str, Any]) -> list[Violation]:
    if state["status"] in PENDING:
        return []  # reported by "settled"
    base, headers = campaign.stack.base, campaign.stack.headers(campaign.tokens[job.user])
    violations: list[Violation] = []
    fresh = read_stream(base, headers, job.job_id, timeout=10)
    campaign.answers.append(("GET", f"/api/sse/jobs/{job.job_id}", fresh.status or None))
    if fresh.final is None or fresh.final.get("status") != state["status"]:
        violations.append(
            Violation("live stream ends with final", job.label, f"fresh: {fresh.describe()}")
        )
        return violations
    final_id = fresh.final_id or 0
    probes = {"before the final": final_id - 1} if final_id >= 1 else {}
    probes["above the current id"] = final_id + 100
    for what, last_id in probes.items():
        resumed = read_stream(base, headers, job.job_id, last_event_id=last_id, timeout=10)
        campaign.answers.append(("GET", f"/api/sse/jobs/{job.job_id}", resumed.status or None))
        if resumed.final is None:
            violations.append(
                Violation(
                    f"live stream with Last-Event-ID {what} ends with final",
                    job.label,
                    f"Last-Event-ID {last_id} (final is #{final_id}): {resumed.describe()}",
                )
            )
    watcher = job.watcher
    if watcher is not None and watcher.final is None:
        violations.append(
            Violation(
                "watched live stream saw final",
                job.label,
                f"{watcher.connections} connections, events {watcher.events}; "
                + " | ".join(watcher.log[-3:]),
            )
        )
    return violations


def check_no_server_errors(campaign: Campaign) -> list[Violation]:
    return [
        Violation("no 5xx", "-", f"{method} {path} answered {status or 'nothing'}")
        for method, path, status in campaign.answers
        if status is None or status >= 500
    ]


# --- Reporting ----------------------------------------------------------------------------


def figures(campaign: Campaign, result: CampaignResult) -> str:
    statuses: dict[str, int] = defaultdict(int)
    for job in campaign.jobs:
        statuses[job.last_known_status] += 1
    paid = extra = excused = 0
    for job in campaign.jobs:
        account = paid_calls(campaign, job)
        paid += account.paid
        extra += max(0, account.paid - 1)
        excused += min(max(0, account.paid - 1), account.allowed - 1)
    jobs_line = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    lines = [
        f"chaos figures (seed {campaign.config.seed}, {campaign.config.seconds:.0f}s of faults):",
        f"  jobs: {len(campaign.jobs)} ({jobs_line})",
        f"  faults: {', '.join(f'{k} {v}' for k, v in sorted(campaign.faults.items()))}",
        f"  SIGKILLs: {len(campaign.kills)}; generation calls "
        f"{len(campaign.stack.openai.generation_calls)}, paid {paid}, extra paid {extra} "
        f"({excused} excused: cut short by a SIGKILL or after cancel + retry; "
        f"{extra - excused} not)",
        f"  settled: {result.settled} in {result.time_to_settle:.1f}s",
        f"  HTTP requests: {len(campaign.answers)}",
    ]
    return "\n".join(lines)


def describe(violations: list[Violation], *, per_invariant: int = 6) -> str:
    by_invariant: dict[str, list[Violation]] = defaultdict(list)
    for violation in violations:
        by_invariant[violation.invariant].append(violation)
    lines = []
    for invariant, items in sorted(by_invariant.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"invariant '{invariant}' broke {len(items)} times:")
        for v in items[:per_invariant]:
            lines.append(f"  - {v.job}: {v.detail}")
        if len(items) > per_invariant:
            lines.append(f"  ... and {len(items) - per_invariant} more")
    return "\n".join(lines)
