"""The price table behind the ledger's estimated cost: USD per image by model, size, quality.

The defaults are OpenAI's published per-image prices as we last knew them (2025 price
list: gpt-image-1, gpt-image-1-mini, DALL-E 2/3), entered on 2026-12-01. No published price
of the newer models (gpt-image-1.5, 2, 2.5, 2.6, including the default
gpt-image-2.6-sunburst) could be read from here, so they fall under ``*``, a deliberately
high estimate (gpt-image-1's high quality, $0.167 at 1024x1024): an estimate that errs
high makes a budget alert early, not late. Operators set their real prices with
OPENAI_IMAGE_PRICES (JSON, merged model by model over these), and check the ledger against
the bill.

A model maps sizes to a price, or to prices by quality; ``*`` is the fallback at every level
(model, size, quality). The offline ``local`` provider costs nothing.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PRICES_DATED = "2026-12-01"

_GPT_IMAGE_1 = {
    "1024x1024": {"low": 0.011, "medium": 0.042, "high": 0.167, "*": 0.167},
    "1024x1536": {"low": 0.016, "medium": 0.063, "high": 0.25, "*": 0.25},
    "1536x1024": {"low": 0.016, "medium": 0.063, "high": 0.25, "*": 0.25},
    "*": {"*": 0.25},
}
DEFAULT_PRICES: dict[str, Any] = {
    "gpt-image-1": _GPT_IMAGE_1,
    "gpt-image-1-mini": {
        "1024x1024": {"low": 0.005, "medium": 0.011, "high": 0.036, "*": 0.036},
        "*": {"low": 0.006, "medium": 0.015, "high": 0.052, "*": 0.052},
    },
    "dall-e-3": {
        "1024x1024": {"standard": 0.04, "hd": 0.08, "*": 0.08},
        "*": {"standard": 0.08, "hd": 0.12, "*": 0.12},
    },
    "dall-e-2": {"1024x1024": 0.02, "512x512": 0.018, "256x256": 0.016, "*": 0.02},
    "local": {"*": 0},
    # Any other model: gpt-image-1's prices, high quality when the quality is unknown.
    "*": _GPT_IMAGE_1,
}


def price_table() -> dict[str, Any]:
    """The defaults with OPENAI_IMAGE_PRICES merged over them, model by model."""
    return {**DEFAULT_PRICES, **settings.OPENAI_IMAGE_PRICES}


def _pick(table: Any, key: str) -> Any:
    if not isinstance(table, dict):
        return table
    if key in table:
        return table[key]
    return table.get("*")


def estimated_cost(*, model: str, size: str, quality: str) -> Decimal:
    """USD for one image of ``model`` at ``size`` and ``quality`` (4 decimals)."""
    price: Any = price_table()
    for key in (model, size, quality or "*"):
        price = _pick(price, key)
        if price is None:
            raise ImproperlyConfigured(
                f"OPENAI_IMAGE_PRICES has no price for {model} {size} {quality or '*'} "
                "and no '*' fallback"
            )
    if isinstance(price, dict):  # a quality table reached with an unknown quality
        price = price.get("*")
    try:
        return Decimal(str(price)).quantize(Decimal("0.0001"))
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"OPENAI_IMAGE_PRICES: the price of {model} {size} is not a number: {price!r}"
        ) from exc
