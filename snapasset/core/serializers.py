"""Strict input fields for every API of the project: a wrong type is a 400 naming the field,
never a value quietly converted (DRF's fields would turn 12 into "12" and "3" into 3)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers, booleans and objects instead of str()-ing them."""

    default_error_messages = {
        "invalid": "Not a valid string.",
        "surrogates": "Not valid Unicode (lone surrogate characters).",
    }

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            # JSON may escape lone surrogates ("\ud800"); the database cannot store them.
            self.fail("surrogates")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An IntegerField that refuses booleans, floats and numeric strings."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A BooleanField that takes JSON true/false only (not "yes", 1 or "true")."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class NoUnknownFieldsMixin(serializers.Serializer):
    """Unknown fields are an error, so a typo (`platfroms`) is not silently ignored."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        known = set(self.fields)
        initial = getattr(self, "initial_data", {})
        unknown = sorted(set(initial) - known) if isinstance(initial, dict) else []
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return attrs
