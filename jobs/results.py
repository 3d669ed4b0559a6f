"""A completed image job's result, as GET /api/jobs/{jobId}/result and the `final` live
event give it: one builder for both.

Plain dicts, no DRF: the worker builds the final event with it (a worker runs without DRF,
tests/core/test_worker_imports.py), and ImageJobResultSerializer, which describes the shape
in the API schema, renders it with absolute URLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.core.files.storage import default_storage

from jobs.models import GeneratedImage, Job
from jobs.platforms import PLATFORMS


def image_url(image: GeneratedImage) -> str:
    """The image's URL as stored: Supabase's, or the storage's (a path on local disk)."""
    return image.url or default_storage.url(image.storage_path)


def image_job_result(
    job: Job,
    images: Iterable[GeneratedImage],
    *,
    url: Callable[[GeneratedImage], str] = image_url,
) -> dict[str, Any]:
    """The result of ``job`` with these ``images``, in the order of the job's platforms."""
    order = {platform_id: i for i, platform_id in enumerate(job.platforms)}
    ordered = sorted(images, key=lambda image: order.get(image.platform_id, 99))
    return {
        "success": True,
        "generationId": str(job.generation_id),
        "images": [_image(image, url=url(image)) for image in ordered],
        "totalImages": len(ordered),
    }


def _image(image: GeneratedImage, *, url: str) -> dict[str, Any]:
    platform = PLATFORMS.get(image.platform_id)
    return {
        "platformId": str(image.platform_id),
        "platformName": platform.name if platform else image.platform_id,
        "width": int(image.width),
        "height": int(image.height),
        "fileSize": int(image.file_size),
        "storagePath": str(image.storage_path),
        "url": url,
        "format": str(image.format),
    }
