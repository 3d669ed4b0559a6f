"""Image models. ``get_provider()`` returns the one IMAGE_PROVIDER names."""

from __future__ import annotations

from typing import Protocol

from django.conf import settings

from jobs.providers.result import ProviderImage

__all__ = ["ImageProvider", "ProviderImage", "get_provider"]


class ImageProvider(Protocol):
    name: str
    # Whether a call costs money (the shared rate limit and quotas are about those calls).
    paid: bool

    def generate(self, *, prompt: str, image_type: str) -> bytes:
        """Return one 1024x1024 image (encoded bytes) for the prompt."""
        ...

    def generate_image(self, *, prompt: str, image_type: str) -> ProviderImage:
        """``generate``, with the request id, model, size and quality of the call."""
        ...


def get_provider() -> ImageProvider:
    if settings.IMAGE_PROVIDER == "openai":
        from jobs.providers.openai import OpenAIProvider

        return OpenAIProvider.from_settings()
    from jobs.providers.local import LocalProvider

    return LocalProvider()
