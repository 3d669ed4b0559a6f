"""The fault campaign: a seeded, randomized run of the real processes under faults.

For ``seconds`` the campaign submits jobs from several users, cancels and retries some,
and meanwhile SIGKILLs and SIGTERMs images workers (restarting them), kills beat and the
cleanup worker, flushes and freezes (SIGSTOP) the broker and slows storage; the OpenAI fake
answers slowly, with 5xx, with 429 + retry-after, with a content-policy 400 (for the jobs
whose prompt asks for it) or with a URL whose first download fails, following a schedule
drawn from the seed for each (job, call). Then it calms down, lets everything settle and
hands over to ``tests.chaos.invariants``.

Every prompt carries a marker ``[cj-N]``, so each call the OpenAI fake saw is attributed to
its job; every process start has its own tag in the fakes' URLs, so a SIGKILL is attributed
to the calls of the process it killed. ``CHAOS_SEED`` replays a run's schedule of actions
and faults (the timing of the machine is not replayed).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.chaos.sse import Watcher
from tests.chaos.stack import MARKER, ChaosStack, Process
from tests.fakes.openai_server import Scripted
from tests.fakes.server import Request

PENDING = ("waiting", "active", "delayed")
FINISHED = ("completed", "failed", "cancelled")
PLATFORMS = (
    "instagram-post", "instagram-story", "twitter-post", "facebook-post", "linkedin-post",
    "youtube-thumbnail",
)  # fmt: skip

# Relative weights of the campaign's actions (one every 0.3-1.2 s).
ACTIONS = {
    "submit": 4.0,
    "cancel": 0.8,
    "retry": 0.8,
    "sigkill_worker": 0.45,
    "sigterm_worker": 0.45,
    "kill_beat": 0.2,
    "kill_cleanup_worker": 0.15,
    "flush_broker": 0.25,
    "freeze_broker": 0.15,
    "slow_storage": 0.35,
}
# Chances of each provider fault per call (the rest succeed at once).
PROVIDER_FAULTS = {"slow": 0.2, "5xx": 0.07, "429": 0.07, "url_download_5xx": 0.05}
# Jobs whose prompt the provider's safety system refuses (always).
POLICY_SHARE = 0.06
MAX_PENDING_SUBMITTED = 16
SIGTERM_STOP_TIMEOUT = 20.0


def pick_fault(roll: float) -> str | None:
    """The provider fault a uniform draw in [0, 1) falls on, or None (a plain success)."""
    for kind, share in PROVIDER_FAULTS.items():
        if roll < share:
            return kind
        roll -= share
    return None


@dataclass
class CampaignConfig:
    seed: int
    seconds: float
    # Settling takes seconds once nothing is lost (a stall is seen after 2 x the lease).
    settle_seconds: float = 120.0
    users: int = 3
    images_workers: int = 2
    watch_share: float = 0.35
    max_watchers: int = 10

    @classmethod
    def from_env(cls, *, default_seconds: float, default_seed: int | None = None) -> CampaignConfig:
        raw = os.environ.get("CHAOS_SEED", "").strip()
        seed = int(raw) if raw else default_seed
        if seed is None:
            seed = random.SystemRandom().randrange(1, 1_000_000)
        seconds = float(os.environ.get("CHAOS_SECONDS", "").strip() or default_seconds)
        settle = float(os.environ.get("CHAOS_SETTLE_SECONDS", "").strip() or 120)
        return cls(seed=seed, seconds=seconds, settle_seconds=settle)


@dataclass
class JobRecord:
    n: int
    user: str
    platforms: list[str]
    output_format: str
    policy: bool
    job_id: str = ""
    generation_id: str = ""
    submitted_at: float = 0.0
    cancels: list[tuple[float, int]] = field(default_factory=list)
    retries: list[tuple[float, int]] = field(default_factory=list)
    watcher: Watcher | None = None
    last_known_status: str = "waiting"

    @property
    def marker(self) -> str:
        return f"[cj-{self.n}]"

    @property
    def label(self) -> str:
        return f"cj-{self.n} {self.job_id}"


@dataclass
class Kill:
    """A SIGKILL of one process start (tag) at a time: the calls it cut short are excused."""

    tag: str
    at: float
    reason: str


@dataclass
class CampaignResult:
    settled: bool
    time_to_settle: float
    pending_left: list[dict[str, Any]]


class Campaign:
    def __init__(
        self,
        stack: ChaosStack,
        config: CampaignConfig,
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self.stack = stack
        self.config = config
        self.rng = random.Random(config.seed)
        self.log = log
        self.jobs: list[JobRecord] = []
        self.by_marker: dict[int, JobRecord] = {}
        self.kills: list[Kill] = []
        self.terms: list[Kill] = []  # SIGTERMs (tag, time), to explain what followed
        self.planned: dict[tuple[int, int], str] = {}  # (job n, call n) -> provider fault
        self.faults: Counter[str] = Counter()
        self.answers: list[tuple[str, str, int | None]] = []  # (method, path, status)
        self.calm = False
        self.tokens: dict[str, str] = {}
        self.staff_token = ""
        self.live: dict[str, Process] = {}
        self.stopping: dict[str, tuple[Process, float]] = {}
        self.restarts: list[tuple[float, str]] = []
        self._provider_lock = threading.Lock()
        self._calls_per_job: Counter[int] = Counter()

    # --- HTTP, recorded ------------------------------------------------------------------

    def http(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response | None:
        """A request to the web process; every answer is recorded (no 5xx is allowed), a
        request that got no answer too (status None)."""
        try:
            response = httpx.request(
                method, f"{self.stack.base}{path}", headers=self.stack.headers(token),
                timeout=30, **kwargs,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            self.answers.append((method, path, None))
            self.log(f"  {method} {path}: no answer ({exc.__class__.__name__})")
            return None
        self.answers.append((method, path, response.status_code))
        return response

    # --- The provider's fault schedule ----------------------------------------------------

    def plan_provider_answer(self, request: Request) -> Scripted | None:
        """The OpenAI fake's answer to one generation request: drawn from the seed, the job
        and the number of the call for that job, so a replay faults the same calls."""
        found = MARKER.search(str(request.json().get("prompt", "")))
        if found is None:
            return None
        n = int(found.group(1))
        with self._provider_lock:
            call = self._calls_per_job[n]
            self._calls_per_job[n] += 1
        job = self.by_marker.get(n)
        openai = self.stack.openai
        if job is not None and job.policy:
            self.faults["provider_content_policy"] += 1
            self.planned[(n, call)] = "content_policy"
            return openai.content_policy_reply()
        if self.calm:
            return None
        draw = random.Random(f"{self.config.seed}:{n}:{call}")
        kind = pick_fault(draw.random())
        self.planned[(n, call)] = kind or "ok"
        if kind is None:
            # Most calls take a moment, so that kills land during some of them.
            return Scripted("b64", data=openai.default_image, delay=draw.uniform(0.2, 1.0))
        self.faults[f"provider_{kind}"] += 1
        if kind == "slow":
            return Scripted("b64", data=openai.default_image, delay=draw.uniform(2.0, 6.0))
        if kind == "5xx":
            return openai.server_error_reply(draw.choice((500, 502, 503)))
        if kind == "429":
            return openai.rate_limit_reply(retry_after=str(draw.randint(1, 3)))
        return openai.url_answer(file_status=503, then_status=200)

    # --- Set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        self.stack.openai.planner = self.plan_provider_answer
        self.stack.start_web()
        self.staff_token = self.stack.api_token("chaos-staff", staff=True)
        for u in range(self.config.users):
            self.tokens[f"chaos-user{u}"] = self.stack.api_token(f"chaos-user{u}")
        for role in self.worker_roles():
            self.live[role] = self.stack.start_worker(role, queues="images", wait=False)
        self.live["cleanup"] = self.stack.start_worker("cleanup", queues="cleanup", wait=False)
        self.live["beat"] = self.stack.start_beat()
        for role in self.worker_roles() + ["cleanup"]:
            self.stack.wait_ready(self.live[role])

    def worker_roles(self) -> list[str]:
        return [f"images{i}" for i in range(self.config.images_workers)]

    def restart(self, role: str) -> None:
        if role == "beat":
            self.live[role] = self.stack.start_beat()
        else:
            queues = "cleanup" if role == "cleanup" else "images"
            self.live[role] = self.stack.start_worker(role, queues=queues, wait=False)

    # --- The run --------------------------------------------------------------------------

    def run(self) -> CampaignResult:
        self.log(f"chaos: seed {self.config.seed} (replay with CHAOS_SEED={self.config.seed}), "
                 f"{self.config.seconds:.0f}s of faults")  # fmt: skip
        self.start()
        deadline = time.monotonic() + self.config.seconds
        actions, weights = zip(*ACTIONS.items(), strict=True)
        while time.monotonic() < deadline:
            self.tend_processes()
            action = self.rng.choices(actions, weights)[0]
            getattr(self, f"do_{action}")()
            time.sleep(self.rng.uniform(0.3, 1.2))
        return self.settle()

    def tend_processes(self) -> None:
        """Restart what is due, and SIGKILL a worker that outlives its stop timeout."""
        now = time.monotonic()
        for role, (process, since) in list(self.stopping.items()):
            if process.reap():
                del self.stopping[role]
                self.restarts.append((now + self.rng.uniform(0.5, 2.0), role))
            elif now - since > SIGTERM_STOP_TIMEOUT:
                self.sigkill(process, reason="stop timeout after SIGTERM")
                del self.stopping[role]
                self.restarts.append((now + 0.5, role))
        for due, role in list(self.restarts):
            if due <= now:
                self.restarts.remove((due, role))
                self.restart(role)

    def sigkill(self, process: Process, *, reason: str) -> None:
        process.kill()
        self.kills.append(Kill(process.tag, time.time(), reason))

    def running(self, roles: list[str]) -> list[str]:
        return [
            role
            for role in roles
            if role in self.live and self.live[role].alive() and role not in self.stopping
        ]

    # --- Actions --------------------------------------------------------------------------

    def do_submit(self) -> None:
        pending = sum(1 for job in self.jobs if job.last_known_status in PENDING)
        if pending >= MAX_PENDING_SUBMITTED:
            self.refresh_statuses()
            return
        n = len(self.jobs) + 1
        user = self.rng.choice(sorted(self.tokens))
        job = JobRecord(
            n=n,
            user=user,
            platforms=self.rng.sample(PLATFORMS, self.rng.randint(1, 3)),
            output_format=self.rng.choice(("png", "png", "webp", "jpeg")),
            policy=self.rng.random() < POLICY_SHARE,
        )
        self.by_marker[n] = job
        prompt = f"A lighthouse in a storm, take {n} {job.marker}"
        if job.policy:
            prompt += " (something the safety system refuses)"
        response = self.http(
            "POST", "/api/jobs/generate", self.tokens[user],
            json={"prompt": prompt, "platforms": job.platforms, "format": job.output_format},
        )  # fmt: skip
        if response is None or response.status_code != 202:
            self.log(f"  submit cj-{n}: {response.status_code if response else 'no answer'}")
            return
        body = response.json()
        job.job_id, job.generation_id = body["jobId"], body["generationId"]
        job.submitted_at = time.time()
        self.jobs.append(job)
        watchers = sum(1 for j in self.jobs if j.watcher is not None and not j.watcher.done)
        if watchers < self.config.max_watchers and self.rng.random() < self.config.watch_share:
            headers = self.stack.headers(self.tokens[user])
            job.watcher = Watcher(self.stack.base, headers, job.job_id).start()

    def do_cancel(self) -> None:
        candidates = [job for job in self.jobs if job.last_known_status in PENDING]
        if not candidates:
            return
        job = self.rng.choice(candidates)
        response = self.http("DELETE", f"/api/jobs/{job.job_id}", self.tokens[job.user])
        status = response.status_code if response is not None else 0
        job.cancels.append((time.time(), status))
        if status == 200:
            job.last_known_status = "cancelled"
        self.faults["cancel"] += 1

    def do_retry(self) -> None:
        self.refresh_statuses(sample=3)
        candidates = [job for job in self.jobs if job.last_known_status in ("failed", "cancelled")]
        if not candidates:
            return
        job = self.rng.choice(candidates)
        response = self.http("POST", f"/api/jobs/{job.job_id}/retry", self.tokens[job.user])
        status = response.status_code if response is not None else 0
        job.retries.append((time.time(), status))
        if status == 200:
            job.last_known_status = "waiting"
        self.faults["retry"] += 1

    def do_sigkill_worker(self) -> None:
        roles = self.running(self.worker_roles())
        if roles:
            role = self.rng.choice(roles)
            self.sigkill(self.live[role], reason="SIGKILL")
            self.restarts.append((time.monotonic() + self.rng.uniform(0.5, 4.0), role))
            self.faults["sigkill_worker"] += 1

    def do_sigterm_worker(self) -> None:
        roles = self.running(self.worker_roles())
        if roles:
            role = self.rng.choice(roles)
            self.live[role].terminate()
            self.terms.append(Kill(self.live[role].tag, time.time(), "SIGTERM"))
            self.stopping[role] = (self.live[role], time.monotonic())
            self.faults["sigterm_worker"] += 1

    def do_kill_beat(self) -> None:
        if self.running(["beat"]):
            self.sigkill(self.live["beat"], reason="beat killed")
            self.restarts.append((time.monotonic() + self.rng.uniform(1.0, 8.0), "beat"))
            self.faults["kill_beat"] += 1

    def do_kill_cleanup_worker(self) -> None:
        if self.running(["cleanup"]):
            self.sigkill(self.live["cleanup"], reason="cleanup worker killed")
            self.restarts.append((time.monotonic() + self.rng.uniform(1.0, 6.0), "cleanup"))
            self.faults["kill_cleanup_worker"] += 1

    def do_flush_broker(self) -> None:
        self.stack.redis.flush()
        self.faults["flush_broker"] += 1

    def do_freeze_broker(self) -> None:
        """Redis alive but not answering for 1-3 s (SIGSTOP, then SIGCONT): a fork stall, a
        full disk, a partition dropping packets. The campaign's own requests go on meanwhile
        (a submit must still answer 202)."""
        self.stack.redis.freeze()
        try:
            self.faults["freeze_broker"] += 1
            if self.tokens and self.rng.random() < 0.5:
                self.do_submit()
            time.sleep(self.rng.uniform(1.0, 3.0))
        finally:
            self.stack.redis.thaw()

    def do_slow_storage(self) -> None:
        if self.stack.supabase is None:
            return
        self.stack.supabase.slow(
            self.rng.uniform(0.5, 3.0), for_seconds=self.rng.uniform(3.0, 10.0)
        )
        self.faults["slow_storage"] += 1

    def refresh_statuses(self, sample: int | None = None) -> None:
        jobs = [job for job in self.jobs if job.last_known_status not in ("completed",)]
        if sample is not None:
            jobs = self.rng.sample(jobs, min(sample, len(jobs)))
        for job in jobs:
            response = self.http("GET", f"/api/jobs/{job.job_id}", self.tokens[job.user])
            if response is not None and response.status_code == 200:
                job.last_known_status = response.json()["status"]

    # --- Settling -------------------------------------------------------------------------

    def settle(self) -> CampaignResult:
        """No more faults: every process back up, the provider and storage well; then wait
        until no job is waiting, active or delayed."""
        self.calm = True
        if self.stack.supabase is not None:
            with self.stack.supabase.lock:
                self.stack.supabase.latencies.clear()
        started = time.monotonic()
        while self.stopping:
            self.tend_processes()
            time.sleep(0.2)
        for _, role in list(self.restarts):
            self.restart(role)
        self.restarts.clear()
        for role in self.worker_roles() + ["cleanup", "beat"]:
            if not self.live[role].alive():
                self.restart(role)
        self.log(f"chaos: {len(self.jobs)} jobs submitted; settling")
        pending: list[dict[str, Any]] = []
        while time.monotonic() - started < self.config.settle_seconds:
            pending = self.pending_jobs()
            if not pending:
                elapsed = time.monotonic() - started
                self.log(f"chaos: settled in {elapsed:.1f}s")
                self.refresh_statuses()
                return CampaignResult(True, elapsed, [])
            time.sleep(1.0)
        self.refresh_statuses()
        return CampaignResult(False, time.monotonic() - started, pending)

    def pending_jobs(self) -> list[dict[str, Any]]:
        response = self.http(
            "GET", "/api/jobs", self.staff_token,
            params={"status": ",".join(PENDING), "limit": 100, "kind": "image-generation"},
        )  # fmt: skip
        if response is None or response.status_code != 200:
            return [{"error": "could not list pending jobs"}]
        return list(response.json()["jobs"])

    def close(self) -> None:
        for job in self.jobs:
            if job.watcher is not None:
                job.watcher.close()
