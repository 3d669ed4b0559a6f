"""Rendering platforms on threads, PNG strategies and alpha handling: pure image functions."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from jobs.pipeline import PNG_STRATEGIES, decode_image, render_platform, render_platforms
from jobs.platforms import PLATFORMS
from jobs.providers.local import LocalProvider

TARGETS = [(p.id, p.width, p.height) for p in PLATFORMS.values()]


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return decode_image(LocalProvider().generate(prompt="A lighthouse at dusk", image_type="vivid"))


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_rendering_on_threads_gives_the_same_bytes_as_one_after_the_other(
    source: Image.Image, fmt: str
) -> None:
    sequential = {
        key: render_platform(source, width, height, fmt).data for key, width, height in TARGETS
    }
    parallel = list(render_platforms(source, TARGETS, fmt, threads=2))
    assert [key for key, _ in parallel] == [key for key, _, _ in TARGETS]  # targets' order
    assert {key: rendered.data for key, rendered in parallel} == sequential


def test_rendering_really_uses_more_than_one_thread(source: Image.Image) -> None:
    seen: set[str] = set()
    original = Image.Image.resize

    def spy(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        seen.add(threading.current_thread().name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    Image.Image.resize = spy  # type: ignore[method-assign]
    try:
        list(render_platforms(source, TARGETS, "jpeg", threads=2))
    finally:
        Image.Image.resize = original  # type: ignore[method-assign]
    assert len(seen) == 2 and all(name.startswith("render") for name in seen)


def test_a_consumer_that_stops_early_leaves_the_remaining_platforms_unrendered(
    source: Image.Image,
) -> None:
    started: list[int] = []
    original = Image.Image.resize

    def counting(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        started.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    Image.Image.resize = counting  # type: ignore[method-assign]
    try:
        renders = render_platforms(source, TARGETS, "jpeg", threads=2)
        next(renders)
        renders.close()
    finally:
        Image.Image.resize = original  # type: ignore[method-assign]
    # The first result, plus at most the two renders running when the consumer stopped.
    assert len(started) <= 3


def test_ready_says_whether_the_next_render_is_finished_so_finished_ones_can_be_taken_together(
    source: Image.Image,
) -> None:
    renders = render_platforms(source, TARGETS[:3], "jpeg", threads=2)
    first = next(renders)
    # The threads went on without the consumer: the other two finish and wait to be taken.
    for _ in range(200):
        if renders.ready():
            break
        threading.Event().wait(0.05)
    ready_together = [first]
    while renders.ready():
        ready_together.append(next(renders))
    assert len(ready_together) >= 2
    keys = [key for key, _ in [*ready_together, *renders]]
    assert keys == [key for key, _, _ in TARGETS[:3]]
    assert not renders.ready()


def test_one_thread_renders_in_order_without_a_pool(source: Image.Image) -> None:
    keys = [key for key, _ in render_platforms(source, TARGETS[:2], "jpeg", threads=1)]
    assert keys == [TARGETS[0][0], TARGETS[1][0]]


@pytest.mark.parametrize("strategy", list(PNG_STRATEGIES))
def test_every_png_strategy_is_lossless(source: Image.Image, strategy: str) -> None:
    rendered = render_platform(source, 1200, 630, "png", png_strategy=strategy)
    reference = render_platform(source, 1200, 630, "png")
    with Image.open(io.BytesIO(rendered.data)) as a, Image.open(io.BytesIO(reference.data)) as b:
        assert a.tobytes() == b.tobytes()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_an_opaque_alpha_channel_is_dropped_on_decode() -> None:
    decoded = decode_image(_png(Image.new("RGBA", (64, 64), (10, 20, 30, 255))))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((5, 5)) == (10, 20, 30)


def test_real_transparency_is_kept() -> None:
    image = Image.new("RGBA", (64, 64), (10, 20, 30, 255))
    image.putpixel((1, 1), (0, 0, 0, 0))
    decoded = decode_image(_png(image))
    assert decoded.mode == "RGBA"
    rendered = render_platform(decoded, 120, 63, "png")
    with Image.open(io.BytesIO(rendered.data)) as out:
        assert out.mode == "RGBA"
