"""A submission body is checked by a fast path first (JobGenerateInputSerializer.plainly_valid):
it must accept only what the serializer accepts, with the same validated data, and leave
every other body to the serializer, whose errors are the API's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.models import ImageFormat, ImageType
from jobs.platforms import PLATFORM_IDS
from jobs.serializers import PRIORITY_MAX, PROMPT_MAX_LENGTH, JobGenerateInputSerializer


def by_the_serializer(body: Any) -> dict[str, Any] | None:
    serializer = JobGenerateInputSerializer(data=body)
    return dict(serializer.validated_data) if serializer.is_valid() else None


VALID = [
    {"prompt": "A fox"},
    {"prompt": "  A fox in the snow \n"},
    {"prompt": "x" * PROMPT_MAX_LENGTH},
    {"prompt": " " + "x" * PROMPT_MAX_LENGTH + " "},  # the limit counts once trimmed
    {"prompt": "雪の狐 🦊"},
    {
        "prompt": "A fox",
        "platforms": ["instagram-post", PLATFORM_IDS[-1]],
        "imageType": "natural",
        "format": "webp",
        "priority": PRIORITY_MAX,
        "userId": " alice ",
        "callbackUrl": "https://example.com/hook",
        "reuse": True,
    },
    {"prompt": "A fox", "priority": 0, "reuse": False},
]

INVALID = [
    None,
    [],
    "A fox",
    {},
    {"prompt": ""},
    {"prompt": "   "},
    {"prompt": None},
    {"prompt": 5},
    {"prompt": True},
    {"prompt": ["A fox"]},
    {"prompt": "x" * (PROMPT_MAX_LENGTH + 1)},
    {"prompt": "a\x00b"},
    {"prompt": "a\ud800b"},
    {"prompt": "A fox", "platfroms": ["instagram-post"]},
    {"prompt": "A fox", "platforms": []},
    {"prompt": "A fox", "platforms": "instagram-post"},
    {"prompt": "A fox", "platforms": ["instagram-post", "instagram-post"]},
    {"prompt": "A fox", "platforms": ["myspace"]},
    {"prompt": "A fox", "platforms": [None]},
    {"prompt": "A fox", "imageType": "VIVID"},
    {"prompt": "A fox", "imageType": None},
    {"prompt": "A fox", "format": ["png"]},
    {"prompt": "A fox", "priority": -1},
    {"prompt": "A fox", "priority": PRIORITY_MAX + 1},
    {"prompt": "A fox", "priority": True},
    {"prompt": "A fox", "priority": 1.0},
    {"prompt": "A fox", "priority": "1"},
    {"prompt": "A fox", "userId": ""},
    {"prompt": "A fox", "userId": "u" * 151},
    {"prompt": "A fox", "userId": 5},
    {"prompt": "A fox", "callbackUrl": "h" * 2049},
    {"prompt": "A fox", "reuse": "true"},
    {"prompt": "A fox", "reuse": 1},
    {"prompt": "A fox", "reuse": None},
]


@pytest.mark.parametrize("body", VALID + INVALID)
def test_the_fast_path_accepts_only_what_the_serializer_accepts_and_gives_the_same_data(
    body: Any,
) -> None:
    fast = JobGenerateInputSerializer.plainly_valid(body)
    if fast is not None:
        assert fast == by_the_serializer(body)
    else:
        assert body not in VALID


def test_every_plain_body_takes_the_fast_path() -> None:
    for body in VALID:
        assert JobGenerateInputSerializer.plainly_valid(body) is not None, body


texts = st.one_of(
    st.text(max_size=8),
    st.just(" "),
    st.just("x" * PROMPT_MAX_LENGTH + " "),
    st.integers(),
    st.none(),
    st.booleans(),
)
values = st.one_of(
    texts,
    st.sampled_from([*ImageType.values, *ImageFormat.values, "VIVID", ""]),
    st.lists(st.sampled_from([*PLATFORM_IDS, "myspace"]), max_size=4),
    st.integers(min_value=-2, max_value=PRIORITY_MAX + 2),
    st.floats(allow_nan=False),
)
fields = st.sampled_from(
    [
        "prompt",
        "platforms",
        "imageType",
        "format",
        "priority",
        "userId",
        "callbackUrl",
        "reuse",
        "other",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(fields, values, max_size=5))
def test_on_any_body_the_fast_path_agrees_with_the_serializer(body: dict[str, Any]) -> None:
    fast = JobGenerateInputSerializer.plainly_valid(body)
    if fast is not None:
        assert fast == by_the_serializer(body)
