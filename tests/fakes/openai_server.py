"""A fake of OpenAI's Images API (POST /v1/images/generations) on loopback.

It speaks what the official client expects: Bearer auth, JSON bodies, the ImagesResponse
shape (``b64_json`` for GPT image models, ``url`` for the legacy form), ``x-request-id``,
and OpenAI's error envelope ``{"error": {message, type, param, code}}`` with the statuses
and codes the real API uses (401 invalid_api_key, 400 moderation_blocked /
content_policy_violation, 429 rate_limit_exceeded with retry-after, 5xx server_error).
Models the SDK documents as shut down (gpt-image-1, dall-e-2/3) answer 404 model_not_found,
and GPT image models refuse the legacy ``style`` / ``response_format`` parameters.

Tests script the next answers with ``queue_*`` / ``fail``; unscripted calls succeed, or
answer what ``planner(request)`` decides (the fault campaign's per-request fault schedule;
``None`` from it is a success). ``reply_for_url`` / ``error_reply`` build planned answers.

``images_per_minute`` makes it enforce an account's images-per-minute limit the way the
real API answers it: a sliding minute of accepted generations; once it is full, 429
``rate_limit_exceeded`` with ``retry-after`` (seconds until the oldest call leaves the
minute) and the ``x-ratelimit-*`` headers. Accepted calls are recorded with their time
(``accepted_at``), so a test or benchmark reads the busiest minute and the 429s it caused.
"""

from __future__ import annotations

import base64
import io
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from tests.fakes.server import FakeServer, Reply, Request

API_KEY = "sk-test-fake-openai-key-0123456789"
RETIRED_MODELS = frozenset({"gpt-image-1", "dall-e-2", "dall-e-3"})
GPT_IMAGE_PREFIXES = ("gpt-image-", "chatgpt-image-")


def png_bytes(size: tuple[int, int] = (1024, 1024), colour: str = "teal") -> bytes:
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    draw.ellipse((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill="orange")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def error_body(
    message: str, *, type: str, code: str | None, param: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class Scripted:
    kind: str  # "b64", "url" or "reply"
    data: bytes = b""
    reply: Reply | None = None
    delay: float = 0.0


RATE_WINDOW_SECONDS = 60.0


class FakeOpenAI(FakeServer):
    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        images_per_minute: int | None = None,
        window_seconds: float = RATE_WINDOW_SECONDS,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.script: deque[Scripted] = deque()
        self.files: dict[str, Reply] = {}
        self.default_image = png_bytes()
        self.images_per_minute = images_per_minute
        # The limit's window: a minute, as the real API's; shorter to test it in seconds.
        self.window_seconds = window_seconds
        # Times (time.time()) of the generations the limit let through, and the 429s it sent.
        self.accepted_at: list[float] = []
        self.rate_limited_at: list[float] = []
        self._rate_lock = threading.Lock()
        self.planner: Callable[[Request], Scripted | None] | None = None
        self.file_then: dict[str, int] = {}

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v1"

    # --- Scripting -----------------------------------------------------------------------

    def queue_b64(self, data: bytes | None = None, *, delay: float = 0.0) -> None:
        self.script.append(
            Scripted("b64", data=data if data is not None else self.default_image, delay=delay)
        )

    def queue_url(
        self,
        data: bytes | None = None,
        *,
        content_type: str = "image/png",
        file_delay: float = 0.0,
        file_status: int = 200,
    ) -> str:
        """The next generation answers with a URL served by this fake; returns that URL."""
        scripted = self.url_answer(
            data, content_type=content_type, file_delay=file_delay, file_status=file_status
        )
        self.script.append(scripted)
        return f"{self.base_url}/files/{scripted.data.decode()}.png"

    def url_answer(
        self,
        data: bytes | None = None,
        *,
        content_type: str = "image/png",
        file_delay: float = 0.0,
        file_status: int = 200,
        then_status: int | None = None,
    ) -> Scripted:
        """A generation answered with a URL of this fake. ``then_status``: the file answers
        ``file_status`` once, then ``then_status`` (a download that fails, then works)."""
        name = uuid.uuid4().hex
        self.files[name] = Reply(
            status=file_status,
            body=data if data is not None else self.default_image,
            headers={"Content-Type": content_type},
            delay=file_delay,
        )
        if then_status is not None:
            self.file_then[name] = then_status
        return Scripted("url", data=name.encode())

    def error_reply(
        self,
        status: int,
        *,
        code: str | None,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Scripted:
        reply = Reply.json(
            error_body(message, type=type, code=code, param=param),
            status=status,
            headers={"x-request-id": f"req_{uuid.uuid4().hex}", **(headers or {})},
        )
        return Scripted("reply", reply=reply)

    def fail(
        self,
        status: int,
        *,
        code: str | None,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        scripted = self.error_reply(
            status, code=code, message=message, type=type, param=param, headers=headers
        )
        for _ in range(times):
            self.script.append(scripted)

    def rate_limit_reply(self, *, retry_after: str = "7") -> Scripted:
        return self.error_reply(
            429,
            code="rate_limit_exceeded",
            type="requests",
            message="Rate limit reached for images per minute (IPM): Limit 5, Used 5, Requested 1. "
            "Please try again in 7s. Visit https://platform.openai.com/account/rate-limits.",
            headers={"retry-after": retry_after, "x-ratelimit-remaining-requests": "0"},
        )

    def server_error_reply(self, status: int = 500) -> Scripted:
        return self.error_reply(
            status,
            code=None,
            type="server_error",
            message="The server had an error while processing your request. Sorry about that!",
        )

    def content_policy_reply(self) -> Scripted:
        return self.error_reply(
            400,
            code="moderation_blocked",
            type="image_generation_user_error",
            message="Your request was rejected by the safety system. safety_violations=[violence]. "
            "request_id=req_8f1c0e",
        )

    def rate_limit(self, *, retry_after: str = "7") -> None:
        self.script.append(self.rate_limit_reply(retry_after=retry_after))

    def server_error(self, status: int = 500) -> None:
        self.script.append(self.server_error_reply(status))

    def reject_content(self) -> None:
        self.script.append(self.content_policy_reply())

    # --- Recorded calls ----------------------------------------------------------------------

    @property
    def generation_calls(self) -> list[Request]:
        return self.seen("POST", "/v1/images/generations")

    def busiest_window(self, seconds: float | None = None) -> int:
        """The most accepted generations in any window of ``seconds`` (default: the
        limit's window), sliding."""
        seconds = seconds or self.window_seconds
        with self._rate_lock:
            times = sorted(self.accepted_at)
        most, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= seconds:
                start += 1
            most = max(most, end - start + 1)
        return most

    def per_minute_counts(self) -> list[int]:
        """Accepted generations per minute, counted from the first one."""
        with self._rate_lock:
            times = sorted(self.accepted_at)
        if not times:
            return []
        counts = [0] * (int((times[-1] - times[0]) // 60) + 1)
        for at in times:
            counts[int((at - times[0]) // 60)] += 1
        return counts

    def _take_rate_slot(self) -> Reply | None:
        """None when the sliding minute has room (the call is counted), else the 429."""
        if self.images_per_minute is None:
            return None
        with self._rate_lock:
            now = time.time()
            recent = [at for at in self.accepted_at if at > now - self.window_seconds]
            limit = self.images_per_minute
            if len(recent) < limit:
                self.accepted_at.append(now)
                return None
            self.rate_limited_at.append(now)
            wait = min(recent) + self.window_seconds - now
        return Reply.json(
            error_body(
                f"Rate limit reached for images per minute (IPM): Limit {limit}, Used "
                f"{len(recent)}, Requested 1. Please try again in {wait:.0f}s. Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                type="requests",
                code="rate_limit_exceeded",
            ),
            status=429,
            headers={
                "x-request-id": f"req_{uuid.uuid4().hex}",
                "retry-after": str(max(1, math.ceil(wait))),
                "x-ratelimit-limit-requests": str(limit),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{wait:.3f}s",
            },
        )

    # --- The API -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        if request.method == "GET" and request.path.startswith("/files/"):
            name = request.path.removeprefix("/files/").removesuffix(".png")
            reply = self.files.get(name)
            if reply is None:
                return Reply(status=404, body=b"Not Found")
            if name in self.file_then:
                # Answer the scripted status once, then the next one from now on.
                self.files[name] = Reply(
                    status=self.file_then.pop(name), body=reply.body, headers=reply.headers
                )
            return reply
        if request.method == "POST" and request.path == "/v1/images/generations":
            return self.generate(request)
        return Reply.json(
            error_body(
                f"Invalid URL ({request.method} {request.path})",
                type="invalid_request_error",
                code=None,
            ),
            status=404,
        )

    def generate(self, request: Request) -> Reply:
        request_id = {"x-request-id": f"req_{uuid.uuid4().hex}"}
        if request.header("authorization") != f"Bearer {self.api_key}":
            given = (request.header("authorization") or "").removeprefix("Bearer ")
            masked = f"{given[:3]}{'*' * 10}{given[-4:]}" if len(given) > 8 else "***"
            return Reply.json(
                error_body(
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    type="invalid_request_error",
                    code="invalid_api_key",
                ),
                status=401,
                headers=request_id,
            )
        if request.header("content-type") != "application/json":
            return Reply.json(
                error_body("Expected a JSON body", type="invalid_request_error", code=None), 400
            )
        body = request.json()
        model = body.get("model")
        if not body.get("prompt"):
            return Reply.json(
                error_body(
                    "Missing required parameter: 'prompt'.",
                    type="invalid_request_error",
                    code="missing_required_parameter",
                    param="prompt",
                ),
                status=400,
                headers=request_id,
            )
        if model in RETIRED_MODELS:
            return Reply.json(
                error_body(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    type="invalid_request_error",
                    code="model_not_found",
                ),
                status=404,
                headers=request_id,
            )
        gpt_image = isinstance(model, str) and model.startswith(GPT_IMAGE_PREFIXES)
        for legacy in ("style", "response_format"):
            if gpt_image and legacy in body:
                return Reply.json(
                    error_body(
                        f"Unknown parameter: '{legacy}'.",
                        type="invalid_request_error",
                        code="unknown_parameter",
                        param=legacy,
                    ),
                    status=400,
                    headers=request_id,
                )

        limited = self._take_rate_slot()
        if limited is not None:
            return limited
        scripted = self.script.popleft() if self.script else None
        if scripted is None and self.planner is not None:
            scripted = self.planner(request)
        if scripted is None:
            scripted = Scripted("b64", data=self.default_image)
        if scripted.kind == "reply":
            assert scripted.reply is not None
            return Reply(
                status=scripted.reply.status,
                body=scripted.reply.body,
                headers=scripted.reply.headers,
                delay=scripted.delay,
            )
        item: dict[str, object]
        if scripted.kind == "url":
            item = {
                "url": f"{self.base_url}/files/{scripted.data.decode()}.png",
                "revised_prompt": None,
            }
        else:
            item = {"b64_json": base64.b64encode(scripted.data).decode()}
        answer: dict[str, object] = {"created": int(time.time()), "data": [item]}
        if gpt_image:
            answer.update(
                background="opaque",
                output_format=body.get("output_format", "png"),
                quality="medium",
                size=body.get("size", "1024x1024"),
                usage={
                    "input_tokens": 12,
                    "input_tokens_details": {"image_tokens": 0, "text_tokens": 12},
                    "output_tokens": 1056,
                    "total_tokens": 1068,
                },
            )
        reply = Reply.json(answer, headers={**request_id, "openai-processing-ms": "1234"})
        reply.delay = scripted.delay
        return reply
