"""The pure image functions and the local provider: no database, no storage."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from jobs.pipeline import cover_crop_box, decode_image, encode_png, render_platform
from jobs.platforms import PLATFORMS
from jobs.providers.local import LocalProvider
from snapasset.core.exceptions import PermanentError


def quadrant_image(size: int = 1024) -> Image.Image:
    """Red centre square on blue: lets a test see which part of the source survived."""
    image = Image.new("RGB", (size, size), (0, 0, 255))
    quarter = size // 4
    image.paste((255, 0, 0), (quarter, quarter, size - quarter, size - quarter))
    return image


@pytest.mark.parametrize("platform_id", list(PLATFORMS))
@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_each_platform_gets_its_exact_size(platform_id: str, fmt: str) -> None:
    platform = PLATFORMS[platform_id]
    rendered = render_platform(quadrant_image(), platform.width, platform.height, fmt)
    with Image.open(io.BytesIO(rendered.data)) as out:
        assert out.size == (platform.width, platform.height)
        assert out.format == {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}[fmt]
    assert (rendered.width, rendered.height, rendered.format) == (
        platform.width,
        platform.height,
        fmt,
    )


def test_cover_crop_keeps_the_centre_and_does_not_distort() -> None:
    story = PLATFORMS["instagram-story"]  # 9:16 from a square: crop the sides
    rendered = render_platform(quadrant_image(), story.width, story.height, "png")
    with Image.open(io.BytesIO(rendered.data)) as out:
        out = out.convert("RGB")
        assert out.getpixel((story.width // 2, story.height // 2)) == (255, 0, 0)
        # The red square spans the middle half of the source height, so it still spans
        # the middle half of the output height: no vertical squash.
        column = [out.getpixel((story.width // 2, y))[0] > 128 for y in range(story.height)]
        red_rows = sum(column)
        assert abs(red_rows - story.height / 2) < story.height * 0.02


def test_cover_crop_box_is_centred_with_the_target_ratio() -> None:
    left, top, right, bottom = cover_crop_box(1024, 1024, 1280, 720)
    assert (left, right) == (0, 1024)
    assert (right - left) / (bottom - top) == pytest.approx(1280 / 720)
    assert top == pytest.approx(1024 - bottom)


def test_the_local_provider_is_deterministic() -> None:
    provider = LocalProvider()
    first = provider.generate(prompt="A lighthouse at dusk", image_type="vivid")
    second = provider.generate(prompt="A lighthouse at dusk", image_type="vivid")
    assert first == second
    with Image.open(io.BytesIO(first)) as image:
        assert image.size == (1024, 1024)


def test_the_local_provider_draws_different_pictures_for_different_prompts() -> None:
    provider = LocalProvider()
    a = Image.open(io.BytesIO(provider.generate(prompt="A lighthouse", image_type="vivid")))
    b = Image.open(io.BytesIO(provider.generate(prompt="A cat asleep", image_type="vivid")))
    small_a = a.convert("RGB").resize((16, 16)).tobytes()
    small_b = b.convert("RGB").resize((16, 16)).tobytes()
    difference = sum(abs(pa - pb) for pa, pb in zip(small_a, small_b, strict=True))
    assert difference / (16 * 16 * 3) > 20  # mean channel difference, clearly visible


def pillow_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_our_png_has_the_same_pixels_as_pillows(mode: str) -> None:
    picture = decode_image(LocalProvider().generate(prompt="A fox", image_type="vivid"))
    image = picture.convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(image.size))  # real transparency
    ours = encode_png(image)
    with Image.open(io.BytesIO(ours)) as a, Image.open(io.BytesIO(pillow_png(image))) as b:
        a.verify()  # every chunk's checksum
    with Image.open(io.BytesIO(ours)) as a, Image.open(io.BytesIO(pillow_png(image))) as b:
        assert (a.format, a.mode, a.size) == ("PNG", mode, image.size)
        assert a.tobytes() == b.tobytes() == image.tobytes()
    # About Pillow's size at the same level (it tries every row filter; ours uses one).
    assert len(ours) < len(pillow_png(image)) * 1.10


@pytest.mark.parametrize("size", [(1, 1), (3, 700), (1200, 630)])
def test_our_png_keeps_every_row_at_any_size(size: tuple[int, int]) -> None:
    # Rows are filtered in strips of ~256 KiB: their seams must not show.
    image = Image.effect_noise(size, 60).convert("RGB")
    with Image.open(io.BytesIO(encode_png(image))) as out:
        assert out.size == size and out.tobytes() == image.tobytes()


def test_images_of_other_modes_are_encoded_by_pillow() -> None:
    grey = Image.linear_gradient("L")
    with Image.open(io.BytesIO(encode_png(grey))) as out:
        assert (out.mode, out.tobytes()) == ("L", grey.tobytes())


def test_the_highest_levels_are_left_to_pillow_whose_row_filters_pay_off_there() -> None:
    image = Image.effect_noise((64, 64), 30).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=9, compress_type=0)  # as before encode_png
    assert encode_png(image, compress_level=9) == buffer.getvalue()
    assert encode_png(image, compress_level=1) != pillow_png(image)


def test_the_local_provider_answers_a_png_that_decodes_to_its_picture() -> None:
    data = LocalProvider().generate(prompt="A lighthouse at dusk", image_type="natural")
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (1024, 1024))
        assert len(image.getcolors(1024 * 1024) or []) > 1000  # a picture, not a flat fill


def test_bytes_that_are_not_an_image_are_a_permanent_error() -> None:
    with pytest.raises(PermanentError):
        decode_image(b"<html>not an image</html>")
