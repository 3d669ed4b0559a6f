"""The offline image model: a deterministic 1024x1024 picture drawn from the prompt.

Same prompt and style, same bytes; a different prompt gives a recognisably different
picture (palette, shapes and the prompt's own words on it). Used by `make run` out of the
box, by the tests and by the benchmarks; it costs nothing and needs no network.

It stands in for a remote call, which costs the worker no CPU, so it is kept cheap: its PNG
is written by ``jobs.pipeline.encode_png`` (one row filter, zlib level 1) rather than by
Pillow's encoder: the same pixels, in less than half the encoding CPU, and 40% less for the
worker to decode (docs/PERFORMANCE.md, round two).
"""

from __future__ import annotations

import hashlib
import random
import textwrap

from PIL import Image, ImageDraw, ImageFont

from jobs.pipeline import encode_png
from jobs.providers.result import ProviderImage

SIZE = 1024


class LocalProvider:
    name = "local"
    paid = False

    def generate_image(self, *, prompt: str, image_type: str) -> ProviderImage:
        return ProviderImage(
            data=self.generate(prompt=prompt, image_type=image_type),
            request_id="",
            model="local",
            size=f"{SIZE}x{SIZE}",
            quality="",
        )

    def generate(self, *, prompt: str, image_type: str) -> bytes:
        seed = hashlib.sha256(f"{image_type}\x00{prompt}".encode()).digest()
        rng = random.Random(seed)
        saturation = 1.0 if image_type == "vivid" else 0.45

        def colour() -> tuple[int, int, int]:
            grey = rng.randint(60, 200)
            return tuple(  # type: ignore[return-value]
                int(grey + (rng.randint(0, 255) - grey) * saturation) for _ in range(3)
            )

        # A smooth four-corner gradient: a 2x2 image upscaled bicubically.
        corners = Image.new("RGB", (2, 2))
        corners.putdata([colour() for _ in range(4)])
        image = corners.resize((SIZE, SIZE), Image.Resampling.BICUBIC).convert("RGBA")

        overlay = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        for _ in range(rng.randint(6, 12)):
            x, y = rng.randint(-100, SIZE), rng.randint(-100, SIZE)
            w, h = rng.randint(80, 420), rng.randint(80, 420)
            fill = (*colour(), rng.randint(70, 170))
            if rng.random() < 0.5:
                draw.ellipse((x, y, x + w, y + h), fill=fill)
            else:
                draw.rounded_rectangle((x, y, x + w, y + h), radius=rng.randint(0, 60), fill=fill)
        image = Image.alpha_composite(image, overlay)

        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=56)
        lines = textwrap.wrap(prompt, width=28)[:6] or [" "]
        text = "\n".join(lines)
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, align="center")
        text_x = (SIZE - (right - left)) / 2
        text_y = (SIZE - (bottom - top)) / 2
        pad = 28
        draw.rounded_rectangle(
            (text_x - pad, text_y - pad, text_x + right - left + pad, text_y + bottom - top + pad),
            radius=24,
            fill=(0, 0, 0, 140),
        )
        draw.multiline_text(
            (text_x - left, text_y - top), text, font=font, fill="white", align="center"
        )

        return encode_png(image.convert("RGB"), compress_level=1)
