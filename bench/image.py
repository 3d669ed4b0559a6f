"""The image step: decode + six cover-crop outputs per format, Pillow (the production
functions in jobs/pipeline.py) against libvips (pyvips) doing the same six cover-crops and
encodes, in the same run. Needs no database.

    python -m bench.image [--rounds 3] [--noise 24]

Sources: the local provider's 1024x1024 picture (smooth, like much generated art) and the
same picture with Gaussian noise (sigma --noise), standing in for photographic detail.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageChops

from bench._support import machine, median, table
from jobs.pipeline import cover_resize, decode_image, encode_image, render_platforms
from jobs.platforms import PLATFORMS

TARGETS = [(p.id, p.width, p.height) for p in PLATFORMS.values()]
PNG_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("level 1", {"png_compress_level": 1}),
    ("level 1, rle", {"png_compress_level": 1, "png_strategy": "rle"}),
    ("level 2", {"png_compress_level": 2}),
    ("level 3", {"png_compress_level": 3}),
    ("level 6", {"png_compress_level": 6}),
    ("level 6, filtered", {"png_compress_level": 6, "png_strategy": "filtered"}),
    ("huffman only", {"png_compress_level": 1, "png_strategy": "huffman"}),
]
VIPS_PNG_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("compression 1, no filter", {"compression": 1, "filter": "none"}),
    ("compression 1, all filters", {"compression": 1, "filter": "all"}),
    ("compression 3, all filters", {"compression": 3, "filter": "all"}),
    ("compression 6, no filter", {"compression": 6, "filter": "none"}),
    ("compression 6, all filters", {"compression": 6, "filter": "all"}),
]
TARGET_JPEG_S, TARGET_WEBP_S = 0.3, 0.6


def sources(noise: float) -> dict[str, bytes]:
    from jobs.providers.local import LocalProvider

    smooth = LocalProvider().generate(
        prompt="A lighthouse at dusk over a stormy sea", image_type="vivid"
    )
    base = Image.open(io.BytesIO(smooth)).convert("RGB")
    grain = Image.effect_noise(base.size, noise).convert("RGB")
    noisy = ImageChops.add(base, grain, scale=1.0, offset=-128)
    buffer = io.BytesIO()
    noisy.save(buffer, "PNG", compress_level=1)
    return {"local provider": smooth, f"noisy (sigma {noise:g})": buffer.getvalue()}


def timed(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return median(times), result


def pillow_job(data: bytes, fmt: str, threads: int, **options: Any) -> int:
    image = decode_image(data)
    return sum(
        len(r.data) for _, r in render_platforms(image, TARGETS, fmt, threads=threads, **options)
    )


def vips_available() -> bool:
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def vips_job(data: bytes, fmt: str, **options: Any) -> int:
    import pyvips

    image = pyvips.Image.new_from_buffer(data, "").copy_memory()  # decode once
    total = 0
    for _, width, height in TARGETS:
        out = image.thumbnail_image(width, height=height, crop="centre", size="both")
        total += len(_vips_encode(out, fmt, **options))
    return total


def _vips_encode(image: Any, fmt: str, **options: Any) -> bytes:
    if fmt == "png":
        # libvips' fastest setting at about Pillow's level-1 size (see the encode-only table).
        return image.write_to_buffer(".png", **(options or {"compression": 1, "filter": "all"}))
    if fmt == "webp":
        return image.write_to_buffer(".webp", Q=85, effort=1)
    return image.write_to_buffer(".jpg", Q=88, optimize_coding=True, interlace=True)


def run(*, rounds: int = 3, noise: float = 24.0) -> dict[str, Any]:
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    have_vips = vips_available()
    if have_vips:
        import pyvips

        pyvips.cache_set_max(0)  # every round does the work again
    results: dict[str, Any] = {"vips": have_vips}
    for name, data in sources(noise).items():
        rows = []
        job_figures = {}
        for fmt in ("png", "webp", "jpeg"):
            one, size = timed(lambda data=data, fmt=fmt: pillow_job(data, fmt, 1), rounds)
            two, _ = timed(lambda data=data, fmt=fmt: pillow_job(data, fmt, 2), rounds)
            vips_t, vips_size = (
                timed(lambda data=data, fmt=fmt: vips_job(data, fmt), rounds)
                if have_vips
                else (float("nan"), 0)
            )
            job_figures[fmt] = {
                "pillow_1": one,
                "pillow_2": two,
                "bytes": size,
                "vips": vips_t,
                "vips_bytes": vips_size,
            }
            target = {
                "jpeg": f"<= {TARGET_JPEG_S} s",
                "webp": f"<= {TARGET_WEBP_S} s",
                "png": "no slower than libvips at equal size",
            }[fmt]
            rows.append([
                fmt, f"{one:.3f}", f"{two:.3f}", f"{size / 1e6:.2f}", f"{vips_t:.3f}",
                f"{vips_size / 1e6:.2f}", f"{two / vips_t:.2f}x" if have_vips else "-", target,
            ])  # fmt: skip
        table(
            f"Image step, {name}: decode + 6 outputs, median of {rounds} (s) ({machine()})",
            [
                "format",
                "Pillow 1 thread",
                "Pillow 2 threads (production)",
                "MB",
                "libvips (its threads)",
                "libvips MB",
                "Pillow 2t / libvips",
                "target",
            ],
            rows,
        )
        # PNG encoders alone, on the same six resized images, one thread each.
        image = decode_image(data)
        resize_t, resized = timed(
            lambda image=image: [cover_resize(image, w, h) for _, w, h in TARGETS], rounds
        )
        png_rows = []
        png_points = []
        for label, options in PNG_SETTINGS:
            t, size = timed(
                lambda o=options, resized=resized: sum(
                    len(encode_image(r, "png", **o)) for r in resized
                ),
                rounds,
            )
            png_rows.append(["Pillow", label, f"{t:.3f}", f"{size / 1e6:.2f}"])
            png_points.append(("Pillow", label, t, size))
        if have_vips:
            import pyvips

            vimage = pyvips.Image.new_from_buffer(data, "").copy_memory()
            vresized = [
                vimage.thumbnail_image(w, height=h, crop="centre", size="both").copy_memory()
                for _, w, h in TARGETS
            ]
            for label, options in VIPS_PNG_SETTINGS:
                t, size = timed(
                    lambda o=options, vresized=vresized: sum(
                        len(r.write_to_buffer(".png", **o)) for r in vresized
                    ),
                    rounds,
                )
                png_rows.append(["libvips", label, f"{t:.3f}", f"{size / 1e6:.2f}"])
                png_points.append(("libvips", label, t, size))
            vresize_t, _ = timed(
                lambda vimage=vimage: [
                    vimage.thumbnail_image(w, height=h, crop="centre", size="both").copy_memory()
                    for _, w, h in TARGETS
                ],
                rounds,
            )
        else:
            vresize_t = float("nan")
        table(
            f"PNG encode only, {name}: the six resized images, median of {rounds} "
            f"(resize alone: Pillow {resize_t:.3f} s, libvips {vresize_t:.3f} s)",
            ["library", "setting", "encode s", "MB"],
            png_rows,
        )
        results[name] = {"jobs": job_figures, "png": png_points, "resize": (resize_t, vresize_t)}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noise", type=float, default=24.0)
    args = parser.parse_args(argv)
    run(rounds=args.rounds, noise=args.noise)


if __name__ == "__main__":
    main()
