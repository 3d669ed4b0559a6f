"""The OpenAI provider, through the official client, against the loopback fake of the API."""

from __future__ import annotations

import inspect
import io
import typing
from typing import Any

import pytest
from PIL import Image

from jobs.providers import get_provider
from jobs.providers.openai import OpenAIProvider
from snapasset.core.exceptions import PermanentError, TransientError
from tests.conftest import free_port
from tests.fakes.openai_server import API_KEY, FakeOpenAI, png_bytes

MODEL = "gpt-image-2.6-sunburst"


def provider_for(fake: FakeOpenAI, **overrides: Any) -> OpenAIProvider:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "model": MODEL,
        "base_url": fake.api_base,
        "timeout_seconds": 5,
    }
    options.update(overrides)
    return OpenAIProvider(**options)


def generate(provider: OpenAIProvider, image_type: str = "vivid") -> bytes:
    return provider.generate(prompt="A red fox in the snow", image_type=image_type)


def assert_safe_reason(message: str) -> None:
    """A failedReason a user may read: no key, no request ids, no provider wording."""
    for leak in (
        "sk-",
        API_KEY[-6:],
        "req_",
        "request_id",
        "safety_violations",
        "platform.openai.com",
    ):
        assert leak not in message, message


# --- The default model ----------------------------------------------------------------------


def test_the_default_model_is_documented_by_the_sdk_and_not_retired(settings: Any) -> None:
    from openai.types import image_model

    documented = typing.get_args(image_model.ImageModel)
    retired_notes = [
        line for line in inspect.getsource(image_model).splitlines() if line.startswith("- ")
    ]
    retired = {name for line in retired_notes for name in documented if f'"{name}"' in line}
    assert {"gpt-image-1", "dall-e-2", "dall-e-3"} <= retired
    assert settings.OPENAI_IMAGE_MODEL in documented
    assert settings.OPENAI_IMAGE_MODEL not in retired


def test_get_provider_builds_the_openai_provider_from_settings(
    use_fake_openai: FakeOpenAI, settings: Any
) -> None:
    provider = get_provider()
    assert isinstance(provider, OpenAIProvider)
    assert provider.model == settings.OPENAI_IMAGE_MODEL
    assert generate(provider) == use_fake_openai.default_image
    call = use_fake_openai.generation_calls[0]
    assert call.json()["model"] == settings.OPENAI_IMAGE_MODEL
    assert call.header("authorization") == f"Bearer {API_KEY}"


def test_without_a_key_the_provider_fails_permanently(settings: Any) -> None:
    settings.IMAGE_PROVIDER = "openai"
    settings.OPENAI_API_KEY = ""
    with pytest.raises(PermanentError, match="OPENAI_API_KEY"):
        get_provider()


# --- Requests and answers -------------------------------------------------------------------


def test_it_asks_for_one_1024_square_png_and_turns_the_style_into_a_prompt_hint(
    fake_openai: FakeOpenAI,
) -> None:
    generate(provider_for(fake_openai), image_type="natural")
    body = fake_openai.generation_calls[0].json()
    assert body["n"] == 1 and body["size"] == "1024x1024" and body["output_format"] == "png"
    assert "style" not in body and "response_format" not in body  # GPT image models refuse them
    assert body["prompt"].startswith("A red fox in the snow")
    assert "natural" in body["prompt"].lower()


def test_legacy_dalle_models_get_the_style_parameter_instead() -> None:
    params = OpenAIProvider(api_key="k", model="dall-e-3").request_params(
        prompt="p", image_type="vivid"
    )
    assert params["style"] == "vivid" and params["prompt"] == "p" and "output_format" not in params


def test_it_returns_the_image_of_a_b64_json_answer(fake_openai: FakeOpenAI) -> None:
    picture = png_bytes((1024, 1024), "purple")
    fake_openai.queue_b64(picture)
    assert generate(provider_for(fake_openai)) == picture


def test_it_downloads_the_image_of_a_url_answer(fake_openai: FakeOpenAI) -> None:
    picture = png_bytes((1024, 1024), "navy")
    fake_openai.queue_url(picture)
    assert generate(provider_for(fake_openai)) == picture
    assert len(fake_openai.seen("GET", "/files/")) == 1


def test_a_url_download_that_times_out_is_transient(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue_url(file_delay=3)
    with pytest.raises(TransientError, match="timed out"):
        generate(provider_for(fake_openai, timeout_seconds=1))


def test_a_url_download_over_the_byte_cap_is_refused(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue_url()
    with pytest.raises(PermanentError, match="larger than allowed"):
        generate(provider_for(fake_openai, download_max_bytes=2048))


def test_a_url_that_does_not_serve_an_image_content_type_is_refused(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.queue_url(b"<html>Access denied</html>", content_type="text/html")
    with pytest.raises(PermanentError, match="did not return an image"):
        generate(provider_for(fake_openai))


def test_a_url_download_failing_with_5xx_is_transient(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue_url(file_status=502)
    with pytest.raises(TransientError, match="HTTP 502"):
        generate(provider_for(fake_openai))


@pytest.mark.parametrize("answer", ["b64", "url"])
def test_bytes_that_are_not_an_image_are_refused(fake_openai: FakeOpenAI, answer: str) -> None:
    junk = b"\x89PNG\r\n\x1a\n" + b"definitely not the rest of a png" * 10
    fake_openai.queue_b64(junk) if answer == "b64" else fake_openai.queue_url(junk)
    with pytest.raises(PermanentError, match="not a valid image"):
        generate(provider_for(fake_openai))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_over_the_pixel_limit_is_refused_without_decoding_it(
    fake_openai: FakeOpenAI,
) -> None:
    # A 7000x7000 PNG (49 Mpx, over the 40 Mpx guard) compresses to a few hundred KB.
    buffer = io.BytesIO()
    Image.new("L", (7000, 7000)).save(buffer, "PNG")
    fake_openai.queue_b64(buffer.getvalue())
    with pytest.raises(PermanentError, match="too large"):
        generate(provider_for(fake_openai))


# --- Error classification -------------------------------------------------------------------


def test_429_is_transient_and_carries_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.rate_limit(retry_after="7")
    with pytest.raises(TransientError) as caught:
        generate(provider_for(fake_openai))
    assert caught.value.retry_after == 7.0
    assert len(fake_openai.generation_calls) == 1  # the SDK did not retry on its own
    assert_safe_reason(caught.value.message)


def test_429_for_an_exhausted_quota_is_permanent(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail(
        429,
        code="insufficient_quota",
        type="insufficient_quota",
        message="You exceeded your current quota, please check your plan and billing details.",
    )
    with pytest.raises(PermanentError, match="out of credit"):
        generate(provider_for(fake_openai))


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_transient(fake_openai: FakeOpenAI, status: int) -> None:
    fake_openai.server_error(status)
    with pytest.raises(TransientError, match=str(status)):
        generate(provider_for(fake_openai))
    assert len(fake_openai.generation_calls) == 1


def test_a_timeout_is_transient(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue_b64(delay=3)
    with pytest.raises(TransientError, match="in time"):
        generate(provider_for(fake_openai, timeout_seconds=1))
    assert len(fake_openai.generation_calls) == 1


def test_an_unreachable_server_is_transient() -> None:
    provider = OpenAIProvider(
        api_key=API_KEY, model=MODEL, base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    with pytest.raises(TransientError, match="Could not reach"):
        generate(provider)


def test_a_content_policy_refusal_is_permanent_with_a_readable_reason(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.reject_content()
    with pytest.raises(PermanentError) as caught:
        generate(provider_for(fake_openai))
    assert "content policy" in caught.value.message
    assert "change the prompt" in caught.value.message
    assert_safe_reason(caught.value.message)


def test_an_invalid_key_is_permanent_and_the_reason_does_not_show_it(
    fake_openai: FakeOpenAI,
) -> None:
    with pytest.raises(PermanentError) as caught:
        generate(provider_for(fake_openai, api_key="sk-wrong-key-that-must-not-leak-9999"))
    assert "OPENAI_API_KEY" in caught.value.message
    assert "9999" not in caught.value.message and "Incorrect API key" not in caught.value.message
    assert_safe_reason(caught.value.message)


def test_a_retired_model_is_permanent_and_names_the_setting(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(PermanentError, match="OPENAI_IMAGE_MODEL"):
        generate(provider_for(fake_openai, model="dall-e-3"))


def test_another_400_is_permanent_and_names_only_the_parameter(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail(
        400,
        code="invalid_value",
        param="size",
        message="Invalid value: '1024x1024'. Supported values are: 'auto' (org-Abc123).",
    )
    with pytest.raises(PermanentError) as caught:
        generate(provider_for(fake_openai))
    assert caught.value.message == "The image model rejected the request (parameter size)"
