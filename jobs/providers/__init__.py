"""Image models. ``get_provider()`` returns the one IMAGE_PROVIDER names."""

from __future__ import annotations

from typing import Protocol

from django.conf import settings

from snapasset.core.exceptions import TransientError


class ImageProvider(Protocol):
    name: str

    def generate(self, *, prompt: str, image_type: str) -> bytes:
        """Return one 1024x1024 image (encoded bytes) for the prompt."""
        ...


class PaidAnswerNotFetched(TransientError):
    """The model answered (a paid call) with a link whose download failed for now; ``url``
    is kept so that the retry downloads it instead of paying again."""

    def __init__(self, message: str, *, url: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.paid_url = url


def get_provider() -> ImageProvider:
    if settings.IMAGE_PROVIDER == "openai":
        from jobs.providers.openai import OpenAIProvider

        return OpenAIProvider.from_settings()
    from jobs.providers.local import LocalProvider

    return LocalProvider()
