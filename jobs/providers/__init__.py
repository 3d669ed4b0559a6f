"""Image models. ``get_provider()`` returns the one IMAGE_PROVIDER names."""

from __future__ import annotations

from typing import Protocol

from django.conf import settings


class ImageProvider(Protocol):
    name: str

    def generate(self, *, prompt: str, image_type: str) -> bytes:
        """Return one 1024x1024 image (encoded bytes) for the prompt."""
        ...


def get_provider() -> ImageProvider:
    if settings.IMAGE_PROVIDER == "openai":
        from jobs.providers.openai import OpenAIProvider

        return OpenAIProvider.from_settings()
    from jobs.providers.local import LocalProvider

    return LocalProvider()
