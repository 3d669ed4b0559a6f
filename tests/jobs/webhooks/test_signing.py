"""Signatures are Standard Webhooks': the reference vector, and what a receiver verifies."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobs.webhooks import signing

# The reference vector of the Standard Webhooks libraries' own tests.
REFERENCE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REFERENCE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REFERENCE_TIMESTAMP = datetime.fromtimestamp(1614265330, tz=UTC)
REFERENCE_BODY = '{"test": 2432232314}'
REFERENCE_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_matches_the_standard_webhooks_reference_vector() -> None:
    headers = signing.signed_headers(
        secrets_=[REFERENCE_SECRET],
        webhook_id=REFERENCE_ID,
        timestamp=REFERENCE_TIMESTAMP,
        body=REFERENCE_BODY,
    )
    assert headers == {
        "webhook-id": REFERENCE_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": REFERENCE_SIGNATURE,
    }


def test_a_receiver_verifies_our_headers_with_the_reference_library() -> None:
    secret = signing.new_secret()
    body = '{"type":"job.completed","data":{"jobId":"x"}}'
    headers = signing.signed_headers(
        secrets_=[secret], webhook_id=signing.new_webhook_id(), timestamp=datetime.now(UTC),
        body=body,
    )  # fmt: skip
    assert Webhook(secret).verify(body, headers) == {
        "type": "job.completed",
        "data": {"jobId": "x"},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("x", "y"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)


def test_during_a_rotation_both_secrets_sign_and_either_verifies() -> None:
    new, old = signing.new_secret(), signing.new_secret()
    headers = signing.signed_headers(
        secrets_=[new, old], webhook_id="msg_1", timestamp=datetime.now(UTC), body="{}"
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify("{}", headers)
    Webhook(old).verify("{}", headers)


def test_secrets_are_whsec_and_32_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert secret != signing.new_secret()
    assert signing.new_webhook_id().startswith("msg_")
