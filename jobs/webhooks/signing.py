"""Standard Webhooks signatures (https://www.standardwebhooks.com), made by the
``standardwebhooks`` package: `webhook-signature: v1,<base64 HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}">`, keyed with the secret's base64-decoded bytes."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
# The spec asks for 24 to 64 random bytes.
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def signature_header(
    *, secrets_: Iterable[str], webhook_id: str, timestamp: datetime, body: str
) -> str:
    """The `webhook-signature` value: one `v1,...` per secret, space-separated (the current
    secret first, then a rotated-out one still in its grace period)."""
    return " ".join(
        Webhook(secret).sign(msg_id=webhook_id, timestamp=timestamp, data=body)
        for secret in secrets_
    )


def signed_headers(
    *, secrets_: Iterable[str], webhook_id: str, timestamp: datetime, body: str
) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature_header(
            secrets_=secrets_, webhook_id=webhook_id, timestamp=timestamp, body=body
        ),
    }
