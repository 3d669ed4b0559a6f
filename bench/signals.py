"""In bench worker processes only (bench.settings): record when each task starts, and with
BENCH_STUB_IMAGE=1 replace the image work (provider, rendering) by tiny stand-ins, so the
CPU a job costs outside the image work can be measured on its own."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from celery.signals import task_prerun, worker_process_init

from snapasset.core.redis_clients import redis_client


@task_prerun.connect
def record_start(task_id: str | None = None, **kwargs: Any) -> None:
    if os.environ.get("BENCH_RECORD_STARTS") == "0":
        return  # bench.capacity counts Redis commands: none of the bench's own
    started = time.time()
    client = redis_client(timeout=None)
    # A job's delivery has the task id `<job id>.<delivery>`: recorded under the job id.
    key = f"bench:start:{(task_id or '').partition('.')[0]}"
    client.rpush(key, repr(started))
    client.expire(key, 600)


class TinyProvider:
    name = "bench-tiny"
    paid = False

    def generate_image(self, *, prompt: str, image_type: str) -> Any:
        from jobs.providers import ProviderImage

        return ProviderImage(
            data=self.generate(prompt=prompt, image_type=image_type),
            request_id="",
            model="bench-tiny",
            size="16x16",
            quality="",
        )

    def generate(self, *, prompt: str, image_type: str) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, "PNG")
        return buffer.getvalue()


def tiny_render(image: Any, width: int, height: int, fmt: str, **options: Any) -> Any:
    from jobs.pipeline import RenderedImage

    return RenderedImage(width=width, height=height, format=fmt, data=b"x" * 64)


def tiny_renders(
    image: Any, targets: Iterable[tuple[str, int, int]], fmt: str, **options: Any
) -> Iterator[Any]:
    """The production render stream (its threads, order and readiness), each render a
    tiny stand-in."""
    from jobs.pipeline import render_platforms

    return render_platforms(image, targets, fmt, **options, render=tiny_render)


@worker_process_init.connect
def stub_image_work(**kwargs: Any) -> None:
    if os.environ.get("BENCH_STUB_IMAGE") != "1":
        return
    from jobs.services import generation

    generation.get_provider = lambda: TinyProvider()  # type: ignore[assignment]
    generation.render_platforms = tiny_renders  # type: ignore[assignment]
