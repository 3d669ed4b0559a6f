"""What one call to an image model returned, with what the ledger records about it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderImage:
    """The encoded image and the call's identity: the provider's request id (OpenAI's
    ``x-request-id``, "" when the provider has none), and the model, size and quality that
    priced it (the ledger's estimated cost, jobs/spend/prices.py)."""

    data: bytes
    request_id: str
    model: str
    size: str
    quality: str
