"""OpenAI's Images API through the official ``openai`` client (IMAGE_PROVIDER=openai).

One 1024x1024 image per job. The SDK's own retries are switched off (``max_retries=0``):
the job does the retrying, with backoff, a retry budget and a checkpoint, so one failed
call must surface at once as a ``TransientError`` (with the server's Retry-After) or a
``PermanentError`` (fails the job with a readable reason). Reasons never carry the
provider's own message, which can echo part of the API key or internal identifiers; the
full error is logged for operators instead.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import openai
from django.conf import settings

from jobs.pipeline import inspect_image
from jobs.providers.result import ProviderImage
from snapasset.core.exceptions import (
    JobError,
    PaidAnswerNotFetched,
    PermanentError,
    RateLimitedError,
    TransientError,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

IMAGE_SIZE = "1024x1024"
# The legacy DALL-E models took `style` (vivid / natural); GPT image models refuse it, so
# the style becomes a sentence of the prompt instead.
STYLE_PARAMETER_MODELS = ("dall-e-3",)
STYLE_HINTS = {
    "vivid": "Style: vivid - hyper-real, dramatic lighting, rich saturated colours.",
    "natural": "Style: natural - realistic, true-to-life colours, soft natural light.",
}
# Errors the API reports for a prompt its safety system refused.
CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
# 429s that waiting does not cure: the account is out of credit.
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
DOWNLOAD_CONNECT_TIMEOUT = 5.0


def uses_style_parameter(model: str) -> bool:
    return model.startswith(STYLE_PARAMETER_MODELS)


def is_gpt_image_model(model: str) -> bool:
    return model.startswith(("gpt-image-", "chatgpt-image-"))


@dataclass
class OpenAIProvider:
    api_key: str
    model: str
    base_url: str | None = None
    timeout_seconds: float = 120.0
    download_max_bytes: int = 20 * 1024 * 1024
    name: str = "openai"
    paid: bool = True

    @classmethod
    def from_settings(cls) -> OpenAIProvider:
        if not settings.OPENAI_API_KEY:
            raise PermanentError("The OpenAI provider is not configured (OPENAI_API_KEY is unset)")
        return cls(
            api_key=settings.OPENAI_API_KEY,
            model=settings.OPENAI_IMAGE_MODEL,
            base_url=settings.OPENAI_BASE_URL or None,
            timeout_seconds=settings.OPENAI_TIMEOUT_SECONDS,
            download_max_bytes=settings.OPENAI_DOWNLOAD_MAX_BYTES,
        )

    def request_params(self, *, prompt: str, image_type: str) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "n": 1, "size": IMAGE_SIZE}
        if uses_style_parameter(self.model):
            params["style"] = image_type
            params["prompt"] = prompt
        else:
            params["prompt"] = f"{prompt}\n\n{STYLE_HINTS.get(image_type, '')}".strip()
        if is_gpt_image_model(self.model):
            # Lossless source for the resizes; GPT image models answer base64 only.
            params["output_format"] = "png"
        return params

    def generate(self, *, prompt: str, image_type: str) -> bytes:
        return self.generate_image(prompt=prompt, image_type=image_type).data

    def warm_up(self) -> None:
        """Build a client and load its images resource once (the SDK imports it lazily),
        without calling the API."""
        client = self._client()
        try:
            client.images  # noqa: B018
        finally:
            client.close()

    def _client(self) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=httpx2.Timeout(self.timeout_seconds, connect=DOWNLOAD_CONNECT_TIMEOUT),
            max_retries=0,
        )

    def generate_image(self, *, prompt: str, image_type: str) -> ProviderImage:
        """One image, with the call's ``x-request-id`` (the SDK's ``_request_id`` of the
        parsed response) and the size and quality the model answered with (GPT image models
        say which quality ``auto`` chose; the legacy ones do not: "auto")."""
        params = self.request_params(prompt=prompt, image_type=image_type)
        client = self._client()
        try:
            response = client.images.generate(**params)
        except openai.OpenAIError as exc:
            error = self._classify(exc)
            error.request_id = getattr(exc, "request_id", None)
            raise error from exc
        finally:
            client.close()
        request_id = response._request_id or ""
        images = response.data or []
        if not images:
            raise TransientError("The image model answered without an image", request_id=request_id)
        first = images[0]
        if first.b64_json:
            try:
                data = base64.b64decode(first.b64_json, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise PermanentError(
                    "The image model returned data that is not a valid image",
                    request_id=request_id,
                ) from exc
        elif first.url:
            try:
                data = self._download(first.url)
            except TransientError as exc:
                # Paid for: the next attempt downloads this link instead of paying again.
                paid = PaidAnswerNotFetched(exc.message, url=first.url, retry_after=exc.retry_after)
                paid.request_id = request_id
                raise paid from exc
            except JobError as exc:
                exc.request_id = request_id
                raise
        else:
            raise TransientError("The image model answered without an image", request_id=request_id)
        inspect_image(data)
        return ProviderImage(
            data=data,
            request_id=request_id,
            model=self.model,
            size=str(getattr(response, "size", None) or params["size"]),
            quality=str(getattr(response, "quality", None) or params.get("quality", "auto")),
        )

    def _classify(self, exc: openai.OpenAIError) -> JobError:
        """Map an SDK error to a transient or permanent job error with a safe message."""
        if isinstance(exc, openai.APITimeoutError):
            return TransientError("The image model did not answer in time")
        if isinstance(exc, openai.APIConnectionError):
            return TransientError("Could not reach the image model")
        if not isinstance(exc, openai.APIStatusError):
            logger.warning("openai client error: %r", exc)
            return PermanentError("The image model request could not be made")
        status = exc.status_code
        code = str(getattr(exc, "code", None) or "")
        logger.warning(
            "openai answered %s (code=%s, type=%s, request_id=%s): %s",
            status, code or "-", getattr(exc, "type", None), exc.request_id, exc.message,
        )  # fmt: skip
        if status == 429:
            if code in QUOTA_CODES:
                return PermanentError("The image model account has run out of credit")
            return RateLimitedError(
                "The image model is rate limited; retrying later",
                retry_after=parse_retry_after(exc.response.headers),
            )
        if status >= 500 or status in (408, 409):
            return TransientError(
                f"The image model had a temporary error (HTTP {status})",
                retry_after=parse_retry_after(exc.response.headers),
            )
        if code in CONTENT_POLICY_CODES:
            return PermanentError(
                "The prompt was rejected by the image model's content policy; "
                "change the prompt and submit a new job"
            )
        if status == 401:
            return PermanentError(
                "The image model refused our credentials; an operator must check OPENAI_API_KEY"
            )
        if status == 403:
            return PermanentError("This account may not use the configured image model")
        if status == 404:
            return PermanentError(
                f"The image model {self.model!r} is not available; check OPENAI_IMAGE_MODEL"
            )
        param = getattr(exc, "param", None)
        detail = f" (parameter {param})" if isinstance(param, str) and param.isidentifier() else ""
        return PermanentError(f"The image model rejected the request{detail}")

    def download(self, url: str) -> bytes:
        """The image an earlier call was answered with as a link (no new paid call):
        TransientError for a failure worth retrying, PermanentError when the link no longer
        gives an image (expired)."""
        data = self._download(url)
        inspect_image(data)
        return data

    def _download(self, url: str) -> bytes:
        """Fetch an image answered as a URL: bounded time and size, image content types only."""
        timeout = httpx.Timeout(self.timeout_seconds, connect=DOWNLOAD_CONNECT_TIMEOUT)
        try:
            with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=3) as client:
                with client.stream("GET", url) as response:
                    if response.status_code >= 500 or response.status_code in (408, 429):
                        raise TransientError(
                            f"Downloading the generated image failed (HTTP {response.status_code})",
                            retry_after=parse_retry_after(response.headers),
                        )
                    if response.status_code != 200:
                        raise PermanentError(
                            f"Downloading the generated image failed (HTTP {response.status_code})"
                        )
                    content_type = response.headers.get("content-type", "").split(";")[0].strip()
                    if not content_type.lower().startswith("image/"):
                        raise PermanentError(
                            "The image model's download link did not return an image"
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.download_max_bytes:
                        raise PermanentError("The generated image is larger than allowed")
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self.download_max_bytes:
                            raise PermanentError("The generated image is larger than allowed")
                        chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise TransientError("Downloading the generated image timed out") from exc
        except httpx.HTTPError as exc:
            raise TransientError("Could not download the generated image") from exc
        return b"".join(chunks)
