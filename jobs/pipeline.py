"""Pure image functions: bytes in, bytes out. No ORM, no storage, no settings.

The source is decoded once; each platform is a cover crop done by ``Image.resize(box=...)``
(one resample from the crop box straight to the target size, never resize-then-crop), then
encoded. Pillow's resampling and encoders release the GIL, so ``render_platforms`` runs the
platforms on a few threads and hands each result back as soon as it is ready; the output
bytes are the same as rendering one platform after the other (tests/jobs/test_pipeline.py).
PNG settings are chosen in docs/PERFORMANCE.md; PNGs are written by ``encode_png`` (one
fixed row filter, zlib), not by Pillow's encoder, which tries every filter on every row.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageChops

from snapasset.core.exceptions import PermanentError

# Pillow refuses images over this many pixels (decompression-bomb guard); a provider's
# 1024x1024 (or 1536x1024) answer is far below it.
MAX_SOURCE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_SOURCE_PIXELS

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}


@dataclass(frozen=True)
class RenderedImage:
    width: int
    height: int
    format: str
    data: bytes

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


# Pillow format names of the encodings we accept from an image model, to our format ids.
SOURCE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}


def inspect_image(data: bytes) -> str:
    """Check that untrusted bytes are a PNG, JPEG or WebP image of sane size, without
    decoding the pixels; return its format id (``png``, ``jpeg``, ``webp``) or raise
    PermanentError. The pixel count is checked explicitly: Pillow only warns between
    MAX_IMAGE_PIXELS and twice that."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            pillow_format = probe.format or ""
            probe.verify()
    except Image.DecompressionBombError as exc:
        raise PermanentError("The generated image is too large to process") from exc
    except Exception as exc:  # Pillow raises many types for corrupt input
        raise PermanentError("The image model returned data that is not a valid image") from exc
    if width * height > MAX_SOURCE_PIXELS:
        raise PermanentError("The generated image is too large to process")
    if pillow_format not in SOURCE_FORMATS:
        raise PermanentError(
            f"The image model returned an unsupported image format ({pillow_format or 'unknown'})"
        )
    return SOURCE_FORMATS[pillow_format]


def decode_image(data: bytes) -> Image.Image:
    """Decode and fully load untrusted image bytes, or raise PermanentError."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image: Image.Image = Image.open(io.BytesIO(data))
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PermanentError("The generated image is too large to process") from exc
    except Exception as exc:  # Pillow raises many types for corrupt input
        raise PermanentError("The image model returned data that is not a valid image") from exc
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    if image.mode == "RGBA" and image.getchannel("A").getextrema() == (255, 255):
        # An opaque alpha channel only costs: a quarter more bytes to resample and encode.
        image = image.convert("RGB")
    return image


def cover_crop_box(
    src_width: int, src_height: int, dst_width: int, dst_height: int
) -> tuple[float, float, float, float]:
    """The centred region of the source with the target's aspect ratio (CSS object-fit: cover)."""
    src_ratio = src_width / src_height
    dst_ratio = dst_width / dst_height
    if src_ratio > dst_ratio:
        crop_width = src_height * dst_ratio
        left = (src_width - crop_width) / 2
        return (left, 0.0, left + crop_width, float(src_height))
    crop_height = src_width / dst_ratio
    top = (src_height - crop_height) / 2
    return (0.0, top, float(src_width), top + crop_height)


def cover_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    box = cover_crop_box(image.width, image.height, width, height)
    return image.resize((width, height), Image.Resampling.LANCZOS, box=box)


# zlib strategies Pillow accepts as ``compress_type`` for PNG.
PNG_STRATEGIES = {"default": 0, "filtered": 1, "huffman": 2, "rle": 3, "fixed": 4}


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_FILTER_UP = b"\x02"
# 8-bit colour types of the PNG header, and the bytes of one pixel.
PNG_COLOUR_TYPES = {"RGB": (2, 3), "RGBA": (6, 4)}
PNG_STRIP_BYTES = 256 * 1024
# Level 6: ours 0.9x Pillow's CPU, files +4%; level 9: ours 1.5x Pillow's CPU.
PNG_UP_FILTER_MAX_LEVEL = 6


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: Image.Image, *, compress_level: int = 1, strategy: str = "default") -> bytes:
    """An RGB or RGBA image as an 8-bit PNG whose every row has the Up filter (each byte
    minus the one above it, modulo 256: one C pass of Pillow's), deflated by zlib at
    ``compress_level`` with ``strategy``.

    Pillow's encoder chooses a filter for each row by trying all five, which is most of a
    render's encoding time; Up alone costs 2.1x less CPU to encode and 1.7x less to decode,
    for the same pixels, at level 1 in files 3.5% larger (36 renders of the local provider's
    pictures: -1% to +12%; docs/PERFORMANCE.md, round two).
    Other modes, and levels above PNG_UP_FILTER_MAX_LEVEL (where zlib's search is most of
    the time and Pillow's per-row choice makes it shorter), go to Pillow's encoder.
    """
    if image.mode not in PNG_COLOUR_TYPES or compress_level > PNG_UP_FILTER_MAX_LEVEL:
        buffer = io.BytesIO()
        image.save(
            buffer, "PNG", compress_level=compress_level, compress_type=PNG_STRATEGIES[strategy]
        )
        return buffer.getvalue()
    colour_type, pixel_bytes = PNG_COLOUR_TYPES[image.mode]
    width, height = image.size
    stride = width * pixel_bytes
    deflate = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 8, PNG_STRATEGIES[strategy])
    compressed = []
    # In strips of ~256 KiB, so that no whole-image copy is made: each strip minus the
    # same rows one up (a crop from row -1 starts with a row of zeros, as Up wants for
    # the first row), each row behind its filter byte.
    rows_per_strip = max(1, PNG_STRIP_BYTES // stride)
    for top in range(0, height, rows_per_strip):
        bottom = min(height, top + rows_per_strip)
        strip = image.crop((0, top, width, bottom))
        above = image.crop((0, top - 1, width, bottom - 1))
        filtered = memoryview(ImageChops.subtract_modulo(strip, above).tobytes())
        rows: list[bytes | memoryview] = []
        for start in range(0, len(filtered), stride):
            rows += (PNG_FILTER_UP, filtered[start : start + stride])
        compressed.append(deflate.compress(b"".join(rows)))
    compressed.append(deflate.flush())
    data = b"".join(compressed)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def encode_image(
    image: Image.Image, fmt: str, *, png_compress_level: int = 1, png_strategy: str = "default"
) -> bytes:
    if fmt == "png":
        return encode_png(image, compress_level=png_compress_level, strategy=png_strategy)
    buffer = io.BytesIO()
    if fmt == "webp":
        # method 1: ~20% faster than 2 on photographic sources at equal size, ~10% bigger on
        # flat art (docs/PERFORMANCE.md).
        image.save(buffer, "WEBP", quality=85, method=1)
    elif fmt == "jpeg":
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        rgb.save(buffer, "JPEG", quality=88, optimize=True, progressive=True)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buffer.getvalue()


def render_platform(
    image: Image.Image,
    width: int,
    height: int,
    fmt: str,
    *,
    png_compress_level: int = 1,
    png_strategy: str = "default",
) -> RenderedImage:
    resized = cover_resize(image, width, height)
    data = encode_image(
        resized, fmt, png_compress_level=png_compress_level, png_strategy=png_strategy
    )
    return RenderedImage(width=width, height=height, format=fmt, data=data)


def render_platforms(
    image: Image.Image,
    targets: Iterable[tuple[str, int, int]],
    fmt: str,
    *,
    threads: int = 2,
    png_compress_level: int = 1,
    png_strategy: str = "default",
    render: Callable[..., RenderedImage] | None = None,
) -> RenderStream:
    """Render ``(key, width, height)`` targets on up to ``threads`` threads, yielding
    ``(key, RenderedImage)`` in the order of ``targets`` as each one is ready.

    Nothing is queued ahead of the threads, so a consumer that stops early (a cancelled job)
    wastes at most the renders already running; closing the iterator waits for those.
    ``ready()`` says whether the next one is already rendered (taking it will not wait), so
    a consumer can record renders that finished together (up to ``threads``) in one go.
    ``render`` replaces ``render_platform`` (benchmarks).
    """
    options: dict[str, Any] = {
        "png_compress_level": png_compress_level,
        "png_strategy": png_strategy,
    }
    return RenderStream(image, list(targets), fmt, threads=threads, options=options, render=render)


class RenderStream(Iterator[tuple[str, RenderedImage]]):
    """The iterator ``render_platforms`` returns."""

    def __init__(
        self,
        image: Image.Image,
        targets: list[tuple[str, int, int]],
        fmt: str,
        *,
        threads: int,
        options: dict[str, Any],
        render: Callable[..., RenderedImage] | None = None,
    ) -> None:
        self._image, self._fmt, self._options = image, fmt, options
        self._render: Callable[..., RenderedImage] = render or render_platform
        self._upcoming = iter(targets)
        self._pending: deque[tuple[str, Future[RenderedImage]]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        if threads > 1 and len(targets) > 1:
            # Image.resize reads the shared source concurrently: it is only read, never
            # written.
            image.load()
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
            for _ in range(threads):
                self._start_next()

    def _start_next(self) -> None:
        """Start the next target: one per thread ahead of the consumer, no more."""
        assert self._pool is not None
        for key, width, height in self._upcoming:
            future = self._pool.submit(
                self._render, self._image, width, height, self._fmt, **self._options
            )
            self._pending.append((key, future))
            return

    def __next__(self) -> tuple[str, RenderedImage]:
        if self._pool is None:
            # One thread: each render is made when it is asked for.
            key, width, height = next(self._upcoming)
            return key, self._render(self._image, width, height, self._fmt, **self._options)
        if not self._pending:
            self.close()
            raise StopIteration
        key, future = self._pending.popleft()
        try:
            rendered = future.result()
        except BaseException:
            self.close()
            raise
        self._start_next()
        return key, rendered

    def ready(self) -> bool:
        """Whether the next render is finished (False when there is none, or when renders
        are made on demand: one thread)."""
        return bool(self._pending) and self._pending[0][1].done()

    def close(self) -> None:
        """Stop: no new render starts; the running ones are waited for."""
        self._upcoming = iter(())
        pool, self._pool = self._pool, None
        self._pending.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
